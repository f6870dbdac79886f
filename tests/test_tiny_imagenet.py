"""Tiny ImageNet through the TF-free ``tiny_imagenet`` builder, on a miniature tiny-imagenet-200.zip in the official
layout: counts, labels, class order, RGB, names, errors, ``load_splits`` and the training CLI."""

import hashlib
import io
import json
import pathlib
import subprocess
import sys
import zipfile

import ml_collections
import numpy as np
import pytest
from PIL import Image

from selectivity_jax.data import load_splits

ROOT = pathlib.Path(__file__).resolve().parents[1]
WNIDS = ("n03000003", "n01000001", "n02000002")  # wnids.txt order: not sorted
TRAIN_PER_CLASS, VAL_PER_CLASS = 4, 2
GRAY = f"{WNIDS[1]}_2.JPEG"  # the one grayscale training image


def _jpeg(rng: np.random.Generator, gray: bool = False) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64) if gray else (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def write_tiny_imagenet_zip(path: pathlib.Path, train_per_class: int = TRAIN_PER_CLASS,
                            val_per_class: int = VAL_PER_CLASS) -> dict:
    """A miniature tiny-imagenet-200.zip in the official layout; returns what the loaders must give back:
    {'train': (images, labels) in (label, file number) order, 'test': ..., 'test_ids', 'val_bytes', 'val_wnids'}."""
    rng = np.random.default_rng(0)
    top = "tiny-imagenet-200"
    train, val_bytes, val_wnids = [], {}, {}
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{top}/wnids.txt", "\n".join(WNIDS) + "\n")
        archive.writestr(f"{top}/words.txt", "n00001740\tentity\n" + "".join(
            f"{wnid}\tthing {i}, another name\n" for i, wnid in enumerate(WNIDS)))
        for label, wnid in enumerate(WNIDS):
            archive.writestr(f"{top}/train/{wnid}/{wnid}_boxes.txt", "")
            for k in reversed(range(train_per_class)):  # written out of order
                name = f"{wnid}_{k}.JPEG"
                data = _jpeg(rng, gray=name == GRAY)
                archive.writestr(f"{top}/train/{wnid}/images/{name}", data)
                train.append((label, k, _decode(data)))
        annotations = []
        for k in range(len(WNIDS) * val_per_class):
            name, wnid = f"val_{k}.JPEG", WNIDS[(k * 2) % len(WNIDS)]
            val_bytes[name], val_wnids[name] = _jpeg(rng), wnid
            archive.writestr(f"{top}/val/images/{name}", val_bytes[name])
            annotations.append(f"{name}\t{wnid}\t0\t0\t63\t63")
        archive.writestr(f"{top}/val/val_annotations.txt", "\n".join(annotations) + "\n")
        archive.writestr(f"{top}/test/images/test_0.JPEG", _jpeg(rng))
    train.sort(key=lambda item: item[:2])
    test_ids = [f"val_{k}.JPEG" for k in range(len(val_bytes))]
    return {"train": (np.stack([t[2] for t in train]), np.asarray([t[0] for t in train], np.int32)),
            "test": (np.stack([_decode(val_bytes[n]) for n in test_ids]),
                     np.asarray([WNIDS.index(val_wnids[n]) for n in test_ids], np.int32)),
            "test_ids": test_ids, "val_bytes": val_bytes, "val_wnids": val_wnids}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """(data_dir, expected): the miniature zip in TFDS's manual directory, prepared once."""
    from selectivity_jax.data.tiny_imagenet import prepare_tiny_imagenet
    data_dir = tmp_path_factory.mktemp("tiny") / "tfds"
    expected = write_tiny_imagenet_zip(data_dir / "downloads" / "manual" / "tiny-imagenet-200.zip")
    prepare_tiny_imagenet(str(data_dir), download=False)
    return str(data_dir), expected


def test_prepared_counts_labels_order_and_rgb(prepared):
    from selectivity_jax.data.tiny_imagenet import load_tiny_imagenet
    data_dir, expected = prepared
    data = load_tiny_imagenet(data_dir, download=False)
    assert data["class_names"] == WNIDS
    assert data["words"] == {wnid: f"thing {i}, another name" for i, wnid in enumerate(WNIDS)}
    for split in ("train", "test"):
        images, labels = data[split]
        assert images.dtype == np.uint8 and labels.dtype == np.int32 and images.shape[1:] == (64, 64, 3)
        np.testing.assert_array_equal(images, expected[split][0])  # JPEG bytes kept: Pillow decodes them alike
        np.testing.assert_array_equal(labels, expected[split][1])
    np.testing.assert_array_equal(np.bincount(data["train"][1]), [TRAIN_PER_CLASS] * 3)
    assert data["test_ids"] == expected["test_ids"]  # val_0, val_1, ..., labelled from val_annotations.txt
    gray = data["train"][0][WNIDS.index(WNIDS[1]) * TRAIN_PER_CLASS + 2]
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 0], gray[..., 2])
    assert "tensorflow" not in sys.modules


def test_builder_keeps_jpeg_bytes_ids_and_metadata(prepared):
    import tensorflow_datasets as tfds
    data_dir, expected = prepared
    builder = tfds.builder("tiny_imagenet", data_dir=data_dir)
    assert builder.info.splits["train"].num_examples == 3 * TRAIN_PER_CLASS
    assert builder.info.splits["validation"].num_examples == 3 * VAL_PER_CLASS
    assert builder.info.features["label"].names == list(WNIDS)
    assert builder.info.metadata["words"][WNIDS[0]] == "thing 0, another name"
    source = builder.as_data_source(split="validation", decoders={"image": tfds.decode.SkipDecoding()})
    for example in (source[i] for i in range(len(source))):
        name = example["id"].decode()
        assert example["image"] == expected["val_bytes"][name]
        assert builder.info.features["label"].names[example["label"]] == expected["val_wnids"][name]


def test_missing_archive_says_where_to_put_it(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds
    from selectivity_jax.data.tiny_imagenet import prepare_tiny_imagenet
    where = str(tmp_path / "downloads" / "manual" / "tiny-imagenet-200.zip")
    with pytest.raises(FileNotFoundError, match="tiny-imagenet-200.zip") as error:
        prepare_tiny_imagenet(str(tmp_path), download=False)
    assert where in str(error.value) and "https://cs231n.stanford.edu/tiny-imagenet-200.zip" in str(error.value)

    def offline(self, url):
        raise ConnectionError(f"no network for {url}")
    monkeypatch.setattr(tfds.download.DownloadManager, "download", offline)
    with pytest.raises(FileNotFoundError) as error:  # the builder tried to download, and failed
        prepare_tiny_imagenet(str(tmp_path))
    assert where in str(error.value) and isinstance(error.value.__cause__, ConnectionError)


def test_check_md5_names_the_file_and_both_hashes(tmp_path):
    """The archive comes over https; `check_md5` passes the file's md5 (either case) and refuses another, naming the
    file, the expected and the actual hash."""
    from selectivity_jax.data.tiny_imagenet import ARCHIVE_URL, check_md5
    assert ARCHIVE_URL.startswith("https://")
    path = tmp_path / "archive.zip"
    path.write_bytes(b"tiny imagenet, not really")
    good = hashlib.md5(path.read_bytes()).hexdigest()
    check_md5(path, good)
    check_md5(str(path), good.upper())
    bad = "0" * 32
    with pytest.raises(ValueError) as error:
        check_md5(path, bad)
    assert str(path) in str(error.value) and good in str(error.value) and bad in str(error.value)


def test_a_download_that_fails_its_md5_is_refused(tmp_path, monkeypatch):
    """The downloaded archive (here: the miniature, as if the download gave it) is checked against ARCHIVE_MD5: a
    mismatch stops the preparation with the file's name and both hashes; the expected hash prepares."""
    import tensorflow_datasets as tfds

    from selectivity_jax.data import tiny_imagenet
    download = tmp_path / "downloads" / "cs231n.stanford.edu_tiny-imagenet-200.zip"
    write_tiny_imagenet_zip(download)
    urls = []
    monkeypatch.setattr(tfds.download.DownloadManager, "download", lambda self, url: urls.append(url) or download)
    with pytest.raises(ValueError) as error:
        tiny_imagenet.prepare_tiny_imagenet(str(tmp_path / "tfds"))
    actual = hashlib.md5(download.read_bytes()).hexdigest()
    assert str(download) in str(error.value) and actual in str(error.value)
    assert tiny_imagenet.ARCHIVE_MD5 in str(error.value) and urls == [tiny_imagenet.ARCHIVE_URL]
    monkeypatch.setattr(tiny_imagenet, "ARCHIVE_MD5", actual)
    builder = tiny_imagenet.prepare_tiny_imagenet(str(tmp_path / "tfds"))
    assert builder.info.splits["validation"].num_examples == 3 * VAL_PER_CLASS


def test_load_splits_tiny_imagenet(prepared, tmp_path):
    data_dir, expected = prepared
    config = ml_collections.ConfigDict(dict(name="tiny_imagenet", data_dir=data_dir, cache_dir=str(tmp_path),
                                            val_per_class=1))
    splits = load_splits(config, seed=0)
    assert splits.sizes() == {"train": 9, "val": 3, "test": 6}
    assert splits.class_names == WNIDS and splits.num_classes == 3 and splits.image_shape == (64, 64, 3)
    np.testing.assert_array_equal(splits.test[0], expected["test"][0])
    np.testing.assert_array_equal(np.bincount(splits.val[1]), [1, 1, 1])
    assert [p.name for p in tmp_path.iterdir()] == ["tiny_imagenet.npz"]
    with pytest.raises(ValueError, match="val_per_class=50"):  # the paper's protocol: too many for the miniature
        load_splits(ml_collections.ConfigDict(dict(name="tiny_imagenet", data_dir=data_dir)), seed=0)


def test_train_cli_starts_from_prepared_data(prepared, tmp_path):
    data_dir, _ = prepared
    workdir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "experiments.train", "--config", "configs/tiny_imagenet_resnet18.py", "--workdir",
         str(workdir), f"--config.data.data_dir={data_dir}", f"--config.data.cache_dir={tmp_path / 'cache'}",
         "--config.data.val_per_class=1", "--config.num_train_steps=2", "--config.batch_size=8",
         "--config.model.width=4",
         "--config.eval_batch_size=8", "--config.num_devices=1", "--config.eval_every_epochs=10",
         "--config.checkpoint_every_epochs=10"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resnet18" in result.stdout and "{'train': 9, 'val': 3, 'test': 6}" in result.stdout
    results = json.loads((workdir / "results.json").read_text())
    assert np.isfinite(results["test_accuracy"]) and np.isfinite(results["test_selectivity"])
    assert json.loads((workdir / "config.json").read_text())["data"]["data_dir"] == data_dir
