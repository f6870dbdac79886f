"""CIFAR-10 through TensorFlow Datasets without TensorFlow.

The stock TFDS ``cifar10`` builder needs TensorFlow to prepare (``tf.io.gfile``, ``tf.image.encode_png``).
``Cifar10Numpy`` (registered as ``cifar10_numpy``) prepares the same data from the official binary archive
``cifar-10-binary.tar.gz`` with numpy and Pillow only, stored as ArrayRecord so that ``tfds.data_source`` reads it
TF-free. ``load_cifar10`` returns the splits as uint8 / int32 numpy arrays.
"""

from __future__ import annotations

import io
import os
import socket
import tarfile
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
ARCHIVE_NAME = "cifar-10-binary.tar.gz"
ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
IMAGE_SHAPE = (32, 32, 3)
_RECORD_BYTES = 1 + 32 * 32 * 3
_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
_TEST_FILES = ("test_batch.bin",)
_BUILDERS = ("auto", "cifar10", "cifar10_numpy")


def parse_records(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Parses CIFAR-10 binary records (1 label byte + 3072 CHW bytes each) into (uint8 [N, 32, 32, 3], int32 [N])."""
    if len(data) % _RECORD_BYTES:
        raise ValueError(f"{len(data)} bytes is not a whole number of {_RECORD_BYTES}-byte CIFAR-10 records")
    records = np.frombuffer(data, np.uint8).reshape(-1, _RECORD_BYTES)
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), records[:, 0].astype(np.int32)


def encode_records(images: np.ndarray, labels: np.ndarray) -> bytes:
    """Inverse of ``parse_records``: uint8 [N, 32, 32, 3] images and labels -> CIFAR-10 binary records."""
    chw = np.asarray(images, np.uint8).transpose(0, 3, 1, 2).reshape(len(images), -1)
    return np.concatenate([np.asarray(labels, np.uint8)[:, None], chw], axis=1).tobytes()


def read_binary_archive(path: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads one split ('train' = data_batch_1..5 in order, 'test' = test_batch) from ``cifar-10-binary.tar.gz``."""
    wanted = {"train": _TRAIN_FILES, "test": _TEST_FILES}[split]
    found: dict[str, bytes] = {}
    with tarfile.open(os.fspath(path), "r:*") as archive:
        for member in archive:
            name = os.path.basename(member.name)
            if member.isfile() and name in wanted:
                found[name] = archive.extractfile(member).read()
    missing = [name for name in wanted if name not in found]
    if missing:
        raise ValueError(f"{path} lacks {missing}: not the official CIFAR-10 binary archive")
    parts = [parse_records(found[name]) for name in wanted]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _png_bytes(image: np.ndarray) -> bytes:
    """Lossless PNG encoding with Pillow (TFDS would call tf.image.encode_png for a numpy array)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


class Cifar10Numpy(tfds.core.GeneratorBasedBuilder):
    """CIFAR-10 prepared from the official binary archive with numpy and Pillow (no TensorFlow)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "TF-free preparation from cifar-10-binary.tar.gz."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (f"Optional: put {ARCHIVE_NAME} ({ARCHIVE_URL}) in the manual directory; "
                                    "otherwise it is downloaded.")

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "id": tfds.features.Text(),
                "image": tfds.features.Image(shape=IMAGE_SHAPE),
                "label": tfds.features.ClassLabel(names=CLASS_NAMES),
            }),
            supervised_keys=("image", "label"),
            homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        )

    def _archive_path(self, dl_manager: tfds.download.DownloadManager) -> os.PathLike:
        """The archive in the manual directory when it is there, else the downloaded one."""
        try:
            manual = dl_manager.manual_dir / ARCHIVE_NAME
        except (AssertionError, ValueError):  # no manual directory configured, or it is empty / missing
            manual = None
        if manual is not None and manual.exists():
            return manual
        try:
            return dl_manager.download(ARCHIVE_URL)
        except Exception as error:  # noqa: BLE001 - any download failure: say where to put the file
            raise FileNotFoundError(_missing_archive_message(os.path.join(self.data_dir_root, "downloads", "manual"),
                                                             download=True)) from error

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator]:
        archive = self._archive_path(dl_manager)
        return {split: self._generate_examples(archive, split) for split in ("train", "test")}

    def _generate_examples(self, archive: os.PathLike, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
        images, labels = read_binary_archive(archive, split)
        for index, (image, label) in enumerate(zip(images, labels)):
            key = f"{split}_{index:05d}"
            yield key, {"id": key, "image": _png_bytes(image), "label": int(label)}


def _stock_is_random_access(data_root: os.PathLike) -> bool:
    """Whether the stock ``cifar10`` is already prepared under ``data_root`` in a format data_source can read."""
    if not os.path.isdir(os.path.join(data_root, "cifar10")):
        return False
    try:
        builder = tfds.builder("cifar10", data_dir=data_root)
        if not builder.is_prepared():
            return False
        formats = builder.info.available_file_formats()
    except Exception:  # noqa: BLE001 - unreadable stock metadata: fall back to the project builder
        return False
    return bool(formats & set(tfds.core.FileFormat.with_random_access()))


def _missing_archive_message(manual_dir: str, download: bool) -> str:
    how = "is not there and cannot be downloaded" if download else "is not there and data.download is False"
    return (f"CIFAR-10 is not prepared and {os.path.join(manual_dir, ARCHIVE_NAME)} {how}: download {ARCHIVE_URL} "
            "and put it there (do not extract it)")


def is_reachable(url: str, timeout: float = 5.0) -> bool:
    """Whether the host of ``url`` accepts a connection within ``timeout`` seconds (a download would fail after
    minutes of retries otherwise)."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def check_cifar10_available(data_dir: str | None, *, download: bool = True) -> None:
    """Raises FileNotFoundError, without writing anything, when CIFAR-10 is neither prepared in ``data_dir`` nor in
    its manual directory as the archive, and cannot be downloaded (``download`` False, or no connection)."""
    builder = tfds.builder("cifar10_numpy", data_dir=data_dir, file_format="array_record")
    manual_dir = os.path.join(builder.data_dir_root, "downloads", "manual")
    if (builder.is_prepared() or _stock_is_random_access(builder.data_dir_root)
            or os.path.exists(os.path.join(manual_dir, ARCHIVE_NAME))):
        return
    if download and is_reachable(ARCHIVE_URL):
        return
    raise FileNotFoundError(_missing_archive_message(manual_dir, download=download))


def prepare_cifar10_numpy(data_dir: str | None, *, download: bool = True) -> tfds.core.DatasetBuilder:
    """Prepares ``cifar10_numpy`` as ArrayRecord in ``data_dir`` unless it already is, from
    ``<data_dir>/downloads/manual/cifar-10-binary.tar.gz`` when present, else by downloading (``download``);
    returns the builder."""
    builder = tfds.builder("cifar10_numpy", data_dir=data_dir, file_format="array_record")
    if not builder.is_prepared():
        manual_dir = os.path.join(builder.data_dir_root, "downloads", "manual")
        if not download and not os.path.exists(os.path.join(manual_dir, ARCHIVE_NAME)):
            raise FileNotFoundError(_missing_archive_message(manual_dir, download=False))
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return builder


def read_batch(source: Sequence[dict[str, Any]], indices: list[int]) -> Sequence[dict[str, Any]]:
    """Examples at ``indices``: one batched read (twice as fast on ArrayRecord), else one by one.

    ``tfds.testing.mock_data`` installs a ``__getitems__`` that lacks ``self`` (TypeError); indexing works there.
    """
    try:
        return source.__getitems__(indices)
    except (AttributeError, TypeError):
        return [source[i] for i in indices]


def source_to_arrays(source: Sequence[dict[str, Any]], batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Reads a TFDS data source of {'image', 'label'[, 'id']} into (uint8 [N, H, W, C], int32 [N]).

    Examples are put in 'id' order when ids are present (TFDS stores them shuffled), i.e. the archive's order.
    """
    images, labels, ids = [], [], []
    for start in range(0, len(source), batch_size):
        for example in read_batch(source, list(range(start, min(start + batch_size, len(source))))):
            images.append(np.asarray(example["image"], np.uint8))
            labels.append(int(np.asarray(example["label"])))
            ids.append(example.get("id"))
    images, labels = np.stack(images), np.asarray(labels, np.int32)
    if all(isinstance(i, (bytes, str)) for i in ids):
        order = np.argsort(np.asarray([i if isinstance(i, bytes) else i.encode() for i in ids]), kind="stable")
        images, labels = images[order], labels[order]
    return images, labels


def load_cifar10(data_dir: str | None, *, builder: str = "auto", download: bool = True,
                 batch_size: int = 1000) -> dict[str, Any]:
    """Returns {'train': (images, labels), 'test': (images, labels), 'class_names': tuple} via ``tfds.data_source``.

    ``builder``: 'cifar10' reads the stock TFDS data (must already be prepared as ArrayRecord: preparing it needs
    TensorFlow), 'cifar10_numpy' reads the project builder (preparing it first when needed, downloading the archive
    only when ``download``), 'auto' takes the stock data when present in ``data_dir`` and ``cifar10_numpy``
    otherwise.
    """
    if builder not in _BUILDERS:
        raise ValueError(f"unknown CIFAR-10 builder {builder!r}; expected one of {_BUILDERS}")
    if builder == "auto":
        data_root = tfds.builder("cifar10_numpy", data_dir=data_dir).data_dir_root
        builder = "cifar10" if _stock_is_random_access(data_root) else "cifar10_numpy"
    if builder == "cifar10_numpy":
        prepare_cifar10_numpy(data_dir, download=download)
    try:
        sources = tfds.data_source(builder, split=["train", "test"], data_dir=data_dir, download=False)
    except (AssertionError, NotImplementedError, ValueError) as error:
        raise FileNotFoundError(
            f"{builder} is not prepared as ArrayRecord in data_dir={data_dir!r} (preparing the stock cifar10 needs "
            "TensorFlow: use builder='cifar10_numpy' or 'auto')") from error
    result: dict[str, Any] = {split: source_to_arrays(source, batch_size)
                              for split, source in zip(("train", "test"), sources)}
    result["class_names"] = CLASS_NAMES
    return result
