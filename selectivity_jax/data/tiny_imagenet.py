"""Tiny ImageNet and Tiny-ImageNet-C as TensorFlow Datasets builders that prepare without TensorFlow.

``tiny_imagenet`` (``TinyImagenet``) reads the official ``tiny-imagenet-200.zip`` (from TFDS's manual directory,
else downloaded from ``ARCHIVE_URL``): splits 'train' (100,000 images, 500 per class) and 'validation' (the
10,000 official validation images, labelled from ``val/val_annotations.txt``); the unlabelled test images are
skipped. Labels follow ``wnids.txt`` order; the ClassLabel names are the wnids and ``info.metadata['words']`` maps
each wnid to its ``words.txt`` description. Every example keeps its file name as ``id``.

``tiny_imagenet_c`` (``TinyImagenetC``) reads the released Tiny-ImageNet-C tree
``Tiny-ImageNet-C/<corruption>/<severity>/<wnid>/<file>.JPEG`` (manual download only), one BuilderConfig per
corruption and severity (``'fog_3'``, as TFDS's ``cifar10_corrupted``) with a single 'test' split, the same
labels as ``tiny_imagenet`` and the file names (``val_<k>.JPEG``) as ids.

JPEG files are stored byte for byte (a TFDS jpeg Image feature takes bytes as they are: no TensorFlow). The few
grayscale JPEGs of Tiny ImageNet stay grayscale on disk and become RGB at decode time: TFDS's numpy decoder (and
TensorFlow's ``decode_image(channels=3)``) repeat the single channel for the declared 3-channel shape. Any other
mode (CMYK, palette; none expected) is re-encoded to an RGB JPEG at preparation. Loaders read with
``tfds.data_source`` (ArrayRecord, TF-free) and put examples in a fixed order: train by (label, file number), the
validation / corrupted test split by file number (``val_0``, ``val_1``, ...), so clean and corrupted copies align.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import zipfile
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from selectivity_jax.data.cifar10 import is_reachable, read_batch

ARCHIVE_NAME = "tiny-imagenet-200.zip"
ARCHIVE_URL = "https://cs231n.stanford.edu/tiny-imagenet-200.zip"
# The source publishes no checksum; this md5 of the archive is the one dataset loaders have long checked it against
# (torchvision-style TinyImageNet classes, e.g. ContinualAI's avalanche and torch-uncertainty).
ARCHIVE_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
C_DIRNAME = "Tiny-ImageNet-C"
C_URL = "https://zenodo.org/record/2536630/files/Tiny-ImageNet-C.tar"
IMAGE_SHAPE = (64, 64, 3)
# The 15 corruptions of the Tiny-ImageNet-C release (Hendrycks & Dietterich's names), severities 1..5.
C_CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
                 "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
                 "jpeg_compression")
SEVERITIES = (1, 2, 3, 4, 5)
_KEPT_MODES = ("RGB", "L")
Examples = tuple[np.ndarray, np.ndarray, list[str]]  # (uint8 images [N, 64, 64, 3], int32 labels [N], ids)


def data_root(data_dir: str | os.PathLike | None) -> str:
    """The TFDS data directory that ``data_dir`` stands for (None: TFDS's default, ~/tensorflow_datasets)."""
    return os.fspath(tfds.builder("tiny_imagenet", data_dir=data_dir).data_dir_root)


def default_manual_dir(data_dir: str | os.PathLike | None) -> str:
    """TFDS's manual directory of ``data_dir``: ``<data_dir>/downloads/manual``."""
    return os.path.join(data_root(data_dir), "downloads", "manual")


def _missing_archive_message(manual_dir: str) -> str:
    return (f"Tiny ImageNet: {ARCHIVE_NAME} is neither in the manual directory nor downloadable. Download "
            f"{ARCHIVE_URL} and put it at {os.path.join(manual_dir, ARCHIVE_NAME)} (do not extract it).")


def _missing_tree_message(manual_dir: str, config: str = "") -> str:
    where = f" (no {config.rsplit('_', 1)[0]}/{config.rsplit('_', 1)[1]} there)" if config else ""
    return (f"Tiny-ImageNet-C is not in the manual directory {manual_dir}{where}: download {C_URL} and extract it "
            f"there, giving {os.path.join(manual_dir, C_DIRNAME, '<corruption>', '<severity>', '<wnid>')}/*.JPEG.")


def check_md5(path: str | os.PathLike, expected: str) -> None:
    """Raises ValueError, naming the file and both hashes, unless the file at ``path`` has the md5 ``expected``."""
    with open(path, "rb") as file:
        actual = hashlib.file_digest(file, lambda: hashlib.md5(usedforsecurity=False)).hexdigest()
    if actual != expected.lower():
        raise ValueError(f"{os.fspath(path)} has md5 {actual}, expected {expected.lower()}: a damaged or different "
                         "file; delete it and try again")


def file_number(name: str) -> tuple:
    """Natural sort key of a file name: 'val_10.JPEG' after 'val_9.JPEG'."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def example_order(ids: Sequence[str], labels: np.ndarray | None = None) -> np.ndarray:
    """Indices putting examples in the loaders' order: by file number, or by (label, file number) with labels."""
    if labels is None:
        return np.asarray(sorted(range(len(ids)), key=lambda i: file_number(ids[i])), np.int64)
    return np.asarray(sorted(range(len(ids)), key=lambda i: (int(labels[i]), file_number(ids[i]))), np.int64)


def rgb_or_gray_jpeg(data: bytes, name: str) -> bytes:
    """The bytes unchanged for an RGB or grayscale JPEG; anything else re-encoded as an RGB JPEG (quality 95)."""
    try:
        image = Image.open(io.BytesIO(data))
        if image.format == "JPEG" and image.mode in _KEPT_MODES:
            return data
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=95)
    except OSError as error:
        raise ValueError(f"cannot decode image {name}: {error}") from error
    return buffer.getvalue()


# --- the official archive -------------------------------------------------------------------------------------------

class TinyImagenetArchive:
    """Read access to ``tiny-imagenet-200.zip`` (with or without its top-level folder)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self.zip = zipfile.ZipFile(self.path)
        wnids = [n for n in self.zip.namelist() if n == "wnids.txt" or n.endswith("/wnids.txt")]
        if not wnids:
            raise ValueError(f"{self.path} lacks wnids.txt: not the official {ARCHIVE_NAME}")
        self.prefix = min(wnids, key=len)[:-len("wnids.txt")]

    def __enter__(self) -> "TinyImagenetArchive":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.zip.close()

    def text(self, name: str) -> str:
        return self.zip.read(self.prefix + name).decode("utf-8")

    def wnids(self) -> list[str]:
        """The 200 class ids in ``wnids.txt`` order (the label order)."""
        return [line.strip() for line in self.text("wnids.txt").splitlines() if line.strip()]

    def words(self, wnids: Sequence[str]) -> dict[str, str]:
        """{wnid: description from words.txt} for ``wnids`` ('' where words.txt has none)."""
        words = dict(line.split("\t", 1) for line in self.text("words.txt").splitlines() if "\t" in line)
        return {wnid: words.get(wnid, "").strip() for wnid in wnids}

    def val_annotations(self) -> dict[str, str]:
        """{validation file name: wnid} from ``val/val_annotations.txt``."""
        rows = (line.split("\t") for line in self.text("val/val_annotations.txt").splitlines() if line.strip())
        return {row[0]: row[1] for row in rows}

    def images(self, split: str) -> Iterator[tuple[str, str, bytes]]:
        """Yields (member path, file name, bytes) of the JPEGs of 'train' (train/<wnid>/images/) or 'val'."""
        start = f"{self.prefix}{split}/"
        for info in self.zip.infolist():
            name = info.filename
            if info.is_dir() or not name.startswith(start) or not name.lower().endswith((".jpeg", ".jpg")):
                continue
            yield name[len(self.prefix):], name.rsplit("/", 1)[-1], self.zip.read(info)


class TinyImagenet(tfds.core.GeneratorBasedBuilder):
    """Tiny ImageNet (200 classes, 64x64): train and the labelled official validation set, JPEGs as released."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "TF-free preparation from tiny-imagenet-200.zip."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (f"Optional: put {ARCHIVE_NAME} ({ARCHIVE_URL}) in the manual directory; "
                                    "otherwise it is downloaded.")

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "id": tfds.features.Text(),
                "image": tfds.features.Image(shape=IMAGE_SHAPE, encoding_format="jpeg"),
                "label": tfds.features.ClassLabel(),  # names (wnids) set from wnids.txt at preparation
            }),
            supervised_keys=("image", "label"),
            homepage="http://cs231n.stanford.edu/",
            metadata=tfds.core.MetadataDict(),
        )

    def _manual_dir(self, dl_manager: tfds.download.DownloadManager) -> str:
        try:
            return os.fspath(dl_manager.manual_dir)
        except (AssertionError, ValueError):  # no manual directory configured, or it does not exist
            return os.path.join(os.fspath(self.data_dir_root), "downloads", "manual")

    def _archive_path(self, dl_manager: tfds.download.DownloadManager) -> str:
        """The archive in the manual directory when it is there (used as it is), else downloaded and checked against
        ``ARCHIVE_MD5``; a clear error if neither, or if the download does not match."""
        manual_dir = self._manual_dir(dl_manager)
        manual = os.path.join(manual_dir, ARCHIVE_NAME)
        if os.path.exists(manual):
            return manual
        try:
            path = os.fspath(dl_manager.download(ARCHIVE_URL))
        except Exception as error:  # noqa: BLE001 - any download failure: say where to put the file
            raise FileNotFoundError(_missing_archive_message(manual_dir)) from error
        check_md5(path, ARCHIVE_MD5)
        return path

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator]:
        path = self._archive_path(dl_manager)
        with TinyImagenetArchive(path) as archive:
            wnids = archive.wnids()
            self.info.features["label"].names = wnids
            self.info.metadata["words"] = archive.words(wnids)
        return {"train": self._generate_examples(path, "train"),
                "validation": self._generate_examples(path, "validation")}

    def _generate_examples(self, path: str, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
        with TinyImagenetArchive(path) as archive:
            labels = {wnid: i for i, wnid in enumerate(archive.wnids())}
            annotations = archive.val_annotations() if split == "validation" else {}
            for key, name, data in archive.images("train" if split == "train" else "val"):
                wnid = key.split("/")[1] if split == "train" else annotations.get(name)
                if wnid not in labels:
                    raise ValueError(f"{path}: {key} has class {wnid!r}, not one of wnids.txt")
                yield key, {"id": name, "image": rgb_or_gray_jpeg(data, key), "label": labels[wnid]}


# --- Tiny-ImageNet-C ------------------------------------------------------------------------------------------------

class TinyImagenetCConfig(tfds.core.BuilderConfig):
    """One corruption at one severity of Tiny-ImageNet-C."""

    def __init__(self, *, corruption: str, severity: int, **kwargs: Any):
        super().__init__(name=f"{corruption}_{severity}", **kwargs)
        self.corruption = corruption
        self.severity = severity


def find_c_tree(manual_dir: str | os.PathLike) -> str | None:
    """The Tiny-ImageNet-C tree in ``manual_dir`` (``<manual_dir>/Tiny-ImageNet-C``, or ``manual_dir`` itself when
    it holds corruption directories), else None."""
    manual_dir = os.fspath(manual_dir)
    for candidate in (os.path.join(manual_dir, C_DIRNAME), manual_dir):
        if any(os.path.isdir(os.path.join(candidate, name)) for name in C_CORRUPTIONS):
            return candidate
    return None


def _prepared_wnids(data_dir: str) -> list[str] | None:
    """The label names of a prepared ``tiny_imagenet`` in ``data_dir``, else None."""
    builder = tfds.builder("tiny_imagenet", data_dir=data_dir)
    return list(builder.info.features["label"].names) if builder.is_prepared() else None


class TinyImagenetC(tfds.core.GeneratorBasedBuilder):
    """Tiny-ImageNet-C (Hendrycks & Dietterich, 2019): the corrupted Tiny ImageNet validation set, JPEGs as
    released; labels in ``tiny_imagenet``'s order (wnids.txt)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "TF-free preparation from the extracted Tiny-ImageNet-C tree."}
    BUILDER_CONFIGS = [TinyImagenetCConfig(corruption=c, severity=s, description=f"{c}, severity {s}")
                       for c in C_CORRUPTIONS for s in SEVERITIES]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Download {C_URL} and extract it into the manual directory (giving Tiny-ImageNet-C/<corruption>/"
        f"<severity>/<wnid>/*.JPEG there). The label order (wnids.txt) is taken from the prepared tiny_imagenet in "
        f"the same data_dir, else from {ARCHIVE_NAME} in the manual directory.")

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "id": tfds.features.Text(),
                "image": tfds.features.Image(shape=IMAGE_SHAPE, encoding_format="jpeg"),
                "label": tfds.features.ClassLabel(),  # names: tiny_imagenet's wnids, set at preparation
            }),
            supervised_keys=("image", "label"),
            homepage="https://github.com/hendrycks/robustness",
        )

    def _wnids(self, manual_dir: str) -> list[str]:
        """The label order: the prepared tiny_imagenet's, else wnids.txt of the archive in the manual directory."""
        wnids = _prepared_wnids(os.fspath(self.data_dir_root))
        if wnids is not None:
            return wnids
        archive = os.path.join(manual_dir, ARCHIVE_NAME)
        if os.path.exists(archive):
            with TinyImagenetArchive(archive) as opened:
                return opened.wnids()
        raise FileNotFoundError(f"tiny_imagenet_c needs Tiny ImageNet's class order (wnids.txt): prepare "
                                f"tiny_imagenet in {self.data_dir_root} first, or put {ARCHIVE_NAME} at {archive}")

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator]:
        try:
            manual_dir = os.fspath(dl_manager.manual_dir)
        except (AssertionError, ValueError) as error:
            raise FileNotFoundError(_missing_tree_message(
                os.path.join(os.fspath(self.data_dir_root), "downloads", "manual"))) from error
        tree = find_c_tree(manual_dir)
        config = self.builder_config
        folder = tree and os.path.join(tree, config.corruption, str(config.severity))
        if folder is None or not os.path.isdir(folder):
            raise FileNotFoundError(_missing_tree_message(manual_dir, config.name))
        wnids = self._wnids(manual_dir)
        self.info.features["label"].names = wnids
        return {"test": self._generate_examples(folder, wnids)}

    def _generate_examples(self, folder: str, wnids: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
        labels = {wnid: i for i, wnid in enumerate(wnids)}
        for class_entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if not class_entry.is_dir() or class_entry.name.startswith("."):
                continue
            if class_entry.name not in labels:
                raise ValueError(f"{class_entry.path}: class {class_entry.name!r} is not one of Tiny ImageNet's wnids")
            for entry in sorted(os.scandir(class_entry.path), key=lambda e: e.name):
                if entry.is_file() and entry.name.lower().endswith((".jpeg", ".jpg")):
                    with open(entry.path, "rb") as file:
                        data = file.read()
                    key = f"{class_entry.name}/{entry.name}"
                    yield key, {"id": entry.name, "image": rgb_or_gray_jpeg(data, entry.path),
                                "label": labels[class_entry.name]}


# --- loaders --------------------------------------------------------------------------------------------------------

def read_examples(source: Sequence[dict[str, Any]], batch_size: int = 1000) -> Examples:
    """Reads a TFDS data source of {'id', 'image', 'label'} as (uint8 [N, 64, 64, 3], int32 [N], ids), stored
    order."""
    images = np.zeros((len(source),) + IMAGE_SHAPE, np.uint8)  # filled in place: no second copy of the split
    labels, ids = np.zeros(len(source), np.int32), []
    for start in range(0, len(source), batch_size):
        for i, example in enumerate(read_batch(source, list(range(start, min(start + batch_size, len(source))))),
                                    start):
            image, name = np.asarray(example["image"], np.uint8), example["id"]
            if image.shape != IMAGE_SHAPE:
                raise ValueError(f"example {name!r} is {image.shape}, expected {IMAGE_SHAPE}")
            images[i], labels[i] = image, int(np.asarray(example["label"]))
            ids.append(name.decode() if isinstance(name, bytes) else str(name))
    return images, labels, ids


def ordered(examples: Examples, by_label: bool = False) -> Examples:
    """``examples`` in the loaders' order (see ``example_order``)."""
    images, labels, ids = examples
    order = example_order(ids, labels if by_label else None)
    return images[order], labels[order], [ids[i] for i in order]


def check_tiny_imagenet_available(data_dir: str | None, *, download: bool = True) -> None:
    """Raises FileNotFoundError, without writing anything, when Tiny ImageNet is neither prepared in ``data_dir``
    nor in its manual directory as the archive, and cannot be downloaded (``download`` False, or no connection)."""
    builder = tfds.builder("tiny_imagenet", data_dir=data_dir, file_format="array_record")
    manual_dir = os.path.join(os.fspath(builder.data_dir_root), "downloads", "manual")
    if builder.is_prepared() or os.path.exists(os.path.join(manual_dir, ARCHIVE_NAME)):
        return
    if download and is_reachable(ARCHIVE_URL):
        return
    raise FileNotFoundError(_missing_archive_message(manual_dir))


def prepare_tiny_imagenet(data_dir: str | None, *, download: bool = True) -> tfds.core.DatasetBuilder:
    """Prepares ``tiny_imagenet`` as ArrayRecord in ``data_dir`` unless it already is, from
    ``<data_dir>/downloads/manual/tiny-imagenet-200.zip`` when present, else by downloading (``download``)."""
    builder = tfds.builder("tiny_imagenet", data_dir=data_dir, file_format="array_record")
    if not builder.is_prepared():
        manual_dir = os.path.join(os.fspath(builder.data_dir_root), "downloads", "manual")
        if not download and not os.path.exists(os.path.join(manual_dir, ARCHIVE_NAME)):
            raise FileNotFoundError(_missing_archive_message(manual_dir))
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return builder


def load_tiny_imagenet(data_dir: str | None, *, download: bool = True, batch_size: int = 1000) -> dict[str, Any]:
    """Tiny ImageNet as arrays: {'train': (images, labels), 'test': (images, labels) = the official validation
    set, 'test_ids': its file names, 'class_names': wnids, 'words': {wnid: description}}.

    Images are uint8 [N, 64, 64, 3] (grayscale ones as 3 equal channels), labels int32 [N]; train in (label, file
    number) order, test in file-number order (val_0, val_1, ...). Prepares the data first when needed.
    """
    builder = prepare_tiny_imagenet(data_dir, download=download)
    train, test = builder.as_data_source(split=["train", "validation"])
    train_images, train_labels, _ = ordered(read_examples(train, batch_size), by_label=True)
    test_images, test_labels, test_ids = ordered(read_examples(test, batch_size))
    return {"train": (train_images, train_labels), "test": (test_images, test_labels), "test_ids": test_ids,
            "class_names": tuple(builder.info.features["label"].names),
            "words": dict(builder.info.metadata.get("words", {}))}


def prepare_tiny_imagenet_c(data_dir: str | None, corruption: str, severity: int, *,
                            manual_dir: str | os.PathLike | None = None) -> tfds.core.DatasetBuilder:
    """Prepares the ``tiny_imagenet_c/<corruption>_<severity>`` config as ArrayRecord in ``data_dir`` unless it
    already is, from the extracted tree in ``manual_dir`` (default ``<data_dir>/downloads/manual``)."""
    builder = tfds.builder(f"tiny_imagenet_c/{corruption}_{severity}", data_dir=data_dir, file_format="array_record")
    if not builder.is_prepared():
        manual_dir = os.fspath(manual_dir) if manual_dir else default_manual_dir(data_dir)
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return builder


def load_tiny_imagenet_c(data_dir: str | None, corruption: str, severity: int, *,
                         manual_dir: str | os.PathLike | None = None, batch_size: int = 1000) -> Examples:
    """One corruption and severity of Tiny-ImageNet-C as (uint8 [N, 64, 64, 3], int32 [N], file names), in
    file-number order: the order of ``load_tiny_imagenet``'s test split. Prepares the config first when needed."""
    builder = prepare_tiny_imagenet_c(data_dir, corruption, severity, manual_dir=manual_dir)
    return ordered(read_examples(builder.as_data_source(split="test"), batch_size))
