"""Tests of the data sources: splits, subsets, cache, image folders, TF-free CIFAR-10 and load_splits."""

import io
import os
import pathlib
import sys
import tarfile

import ml_collections
import numpy as np
import pytest
from PIL import Image

from selectivity_jax.data import (ArraySplits, cached_arrays, load_image_folder, load_image_folder_splits,
                                  load_splits, split_train_val, subset)

CIFAR10_JPEG = pathlib.Path(__file__).parents[1] / ".." / "shared" / "data" / "cifar10-jpeg" / "cifar10-jpeg.tar.gz"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _labels(num_classes=10, per_class=20):
    return np.tile(np.arange(num_classes, dtype=np.int32), per_class)


# --- splits ---------------------------------------------------------------------------------------------------------

def test_split_num_val_sizes_disjoint_and_complete():
    labels = _labels()
    ids = np.arange(len(labels))  # stands in for the images: tells which example went where
    (train_ids, train_labels), (val_ids, val_labels) = split_train_val(ids, labels, num_val=20, seed=0)
    assert (len(train_ids), len(val_ids)) == (180, 20)
    assert not set(train_ids) & set(val_ids)
    np.testing.assert_array_equal(np.sort(np.concatenate([train_ids, val_ids])), ids)
    np.testing.assert_array_equal(train_labels, labels[train_ids])
    np.testing.assert_array_equal(val_labels, labels[val_ids])


def test_split_val_per_class():
    labels = _labels(per_class=12)
    (train_ids, _), (val_ids, val_labels) = split_train_val(np.arange(len(labels)), labels, val_per_class=3, seed=1)
    np.testing.assert_array_equal(np.bincount(val_labels), np.full(10, 3))
    assert len(train_ids) == 90 and not set(train_ids) & set(val_ids)


@pytest.mark.parametrize("kwargs", [dict(num_val=20), dict(val_per_class=2)])
def test_split_is_deterministic_and_seed_dependent(kwargs):
    labels, ids = _labels(), np.arange(200)
    val = lambda seed: split_train_val(ids, labels, seed=seed, **kwargs)[1][0]  # noqa: E731
    np.testing.assert_array_equal(val(3), val(3))
    assert not np.array_equal(val(3), val(4))


def test_split_without_validation_and_errors():
    labels, ids = _labels(), np.arange(200)
    (train_ids, _), (val_ids, val_labels) = split_train_val(ids, labels, seed=0)
    assert len(train_ids) == 200 and len(val_ids) == 0 and val_labels.dtype == labels.dtype
    with pytest.raises(ValueError, match="num_val"):
        split_train_val(ids, labels, num_val=200, seed=0)
    with pytest.raises(ValueError, match="one of"):
        split_train_val(ids, labels, num_val=5, val_per_class=1, seed=0)
    with pytest.raises(ValueError, match="too few"):
        split_train_val(ids, labels, val_per_class=20, seed=0)


def test_subset_is_stratified_and_seeded():
    labels, ids = _labels(), np.arange(200)
    sub_ids, sub_labels = subset(ids, labels, 30, seed=0)
    np.testing.assert_array_equal(np.bincount(sub_labels), np.full(10, 3))
    np.testing.assert_array_equal(sub_labels, labels[sub_ids])
    assert np.all(np.diff(sub_ids) > 0)  # data order, no repeats
    np.testing.assert_array_equal(sub_ids, subset(ids, labels, 30, seed=0)[0])
    assert not np.array_equal(sub_ids, subset(ids, labels, 30, seed=1)[0])
    for n in (None, 0, 500):
        assert subset(ids, labels, n, seed=0)[0] is ids


def test_array_splits_shapes_and_sizes():
    images = np.zeros((6, 4, 4, 3), np.uint8)
    labels = np.array([0, 1, 0, 1, 0, 1], np.int32)
    splits = ArraySplits(train=(images[:4], labels[:4]), val=(images[:0], labels[:0]), test=(images[4:], labels[4:]),
                         num_classes=2, class_names=("a", "b"))
    assert splits.image_shape == (4, 4, 3)
    assert splits.sizes() == {"train": 4, "val": 0, "test": 2}
    with pytest.raises(ValueError):
        ArraySplits(train=(images, labels), val=(images, labels), test=(images[:, :2], labels), num_classes=2,
                    class_names=("a", "b"))


def test_cached_arrays_round_trip(tmp_path):
    calls = []

    def build():
        calls.append(1)
        return {"x": np.arange(6, dtype=np.int32).reshape(2, 3), "names": np.asarray(["a", "bc"])}

    first = cached_arrays(tmp_path / "cache", "key", build)
    second = cached_arrays(tmp_path / "cache", "key", build)
    assert len(calls) == 1
    assert sorted(os.listdir(tmp_path / "cache")) == ["key.npz"]  # no temporary file left behind
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
        assert first[name].dtype == second[name].dtype
    cached_arrays(None, "key", build)
    assert len(calls) == 2
    with pytest.raises(ValueError):
        cached_arrays(tmp_path, "a/b", build)


# --- image folders --------------------------------------------------------------------------------------------------

TREE_CLASSES = ("ant", "bee", "cat")  # written in another order, must come back sorted


def _write_tree(root: pathlib.Path, fmt: str = "PNG", per_split=(("train", 4), ("test", 2)), size=(8, 8)):
    """Writes root/<split>/<class>/<NN>.<ext> with random images; returns {split: (images, labels)} as expected."""
    rng = np.random.default_rng(0)
    expected = {}
    for split, count in per_split:
        images, labels = [], []
        for label, class_name in enumerate(TREE_CLASSES):
            folder = root / split / class_name
            folder.mkdir(parents=True)
            (folder / "notes.txt").write_text("not an image")
            by_name = {}
            for i in reversed(range(count)):  # written in reverse name order
                path = folder / f"{i:02d}.{'png' if fmt == 'PNG' else 'jpg'}"
                Image.fromarray(rng.integers(0, 256, size=size + (3,), dtype=np.uint8)).save(path, format=fmt)
                by_name[path.name] = np.asarray(Image.open(path).convert("RGB"))  # JPEG: as Pillow decodes it
            images += [by_name[name] for name in sorted(by_name)]
            labels += [label] * count
        expected[split] = (np.stack(images), np.asarray(labels, np.int32))
    return expected


def _tar(source: pathlib.Path, path: pathlib.Path, top: str | None) -> pathlib.Path:
    with tarfile.open(path, "w:gz" if path.suffix == ".gz" else "w") as archive:
        for split in sorted(os.listdir(source)):
            archive.add(source / split, arcname=f"{top}/{split}" if top else split)
    return path


@pytest.fixture(scope="module")
def png_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("png") / "tree"
    return root, _write_tree(root)


def _assert_same(actual, expected):
    images, labels, class_names = actual
    assert images.dtype == np.uint8 and labels.dtype == np.int32
    assert class_names == TREE_CLASSES
    np.testing.assert_array_equal(images, expected[0])
    np.testing.assert_array_equal(labels, expected[1])


def test_image_folder_directory_png_exact(png_tree):
    root, expected = png_tree
    for split in ("train", "test"):
        _assert_same(load_image_folder(root, split), expected[split])


@pytest.mark.parametrize("name, top", [("tree.tar.gz", "toplevel"), ("tree.tar", None), ("tree.tgz", None)])
def test_image_folder_archive_matches_directory(png_tree, tmp_path, name, top):
    root, expected = png_tree
    archive = _tar(root, tmp_path / name, top)
    read = load_image_folder_splits(archive, ("train", "test"))
    for split in ("train", "test"):
        _assert_same(read[split], expected[split])


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_image_folder_archive_cut_short_anywhere_is_an_error(png_tree, tmp_path, mode):
    """Cut at every member boundary (where tarfile alone would just end the archive early) and mid-member."""
    root, expected = png_tree
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for split in ("test", "train"):
            archive.add(root / split, arcname=split)
    plain = buffer.getvalue()
    members = tarfile.open(fileobj=io.BytesIO(plain)).getmembers()
    headers = [info.offset for info in members] + [members[-1].offset_data + -(-members[-1].size // 512) * 512]
    whole = tmp_path / "whole.tar"
    with tarfile.open(fileobj=io.BytesIO(plain)) as source, tarfile.open(whole, mode) as target:
        for info in source.getmembers():
            target.addfile(info, source.extractfile(info) if info.isfile() else None)
    content = whole.read_bytes()
    read = load_image_folder_splits(whole, ("train", "test"))  # the whole archive, whatever its suffix
    _assert_same(read["train"], expected["train"])
    if mode == "w":  # at each header, after the last member (no end blocks) and inside a member's data
        cuts = headers[1:] + [members[-1].offset_data + 10]
    else:
        cuts = [len(content) * k // 8 for k in range(1, 8)] + [len(content) - 1]
    for cut in cuts:
        path = tmp_path / "cut.tar.gz"
        path.write_bytes(content[:cut])
        with pytest.raises(ValueError, match="cannot read the archive"):
            load_image_folder_splits(path, ("train", "test"))


def test_image_folder_jpeg(tmp_path):
    expected = _write_tree(tmp_path / "tree", fmt="JPEG", per_split=(("train", 3),))
    _assert_same(load_image_folder(tmp_path / "tree", "train"), expected["train"])
    archive = _tar(tmp_path / "tree", tmp_path / "tree.tar.gz", None)
    _assert_same(load_image_folder(archive, "train"), expected["train"])


def test_image_folder_grayscale_becomes_rgb(tmp_path):
    folder = tmp_path / "train" / "only"
    folder.mkdir(parents=True)
    Image.fromarray(np.full((5, 5), 77, np.uint8), mode="L").save(folder / "a.png")
    images, labels, class_names = load_image_folder(tmp_path, "train")
    assert images.shape == (1, 5, 5, 3) and np.all(images == 77) and class_names == ("only",)


def test_image_folder_shape_mismatch_and_resize(png_tree, tmp_path):
    root = tmp_path / "tree"
    _write_tree(root, per_split=(("train", 2),))
    Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(root / "train" / "bee" / "odd.png")
    with pytest.raises(ValueError, match="odd.png"):
        load_image_folder(root, "train")
    images, labels, _ = load_image_folder(root, "train", image_size=6)
    assert images.shape == (7, 6, 6, 3) and list(np.bincount(labels)) == [2, 3, 2]


def test_image_folder_missing_root_or_split(png_tree, tmp_path):
    root, _ = png_tree
    with pytest.raises(FileNotFoundError):
        load_image_folder(tmp_path / "nowhere", "train")
    with pytest.raises(FileNotFoundError, match="val"):
        load_image_folder(root, "val")
    with pytest.raises(FileNotFoundError, match="val"):
        load_image_folder(_tar(root, tmp_path / "tree.tar", None), "val")


@pytest.mark.skipif(not CIFAR10_JPEG.exists(), reason="CIFAR-10 JPEG archive not present")
def test_real_cifar10_jpeg_test_split():
    images, labels, class_names = load_image_folder(CIFAR10_JPEG, "test")
    assert images.shape == (10000, 32, 32, 3) and images.dtype == np.uint8
    assert class_names == CIFAR10_CLASSES
    np.testing.assert_array_equal(np.bincount(labels), np.full(10, 1000))
    mean = images.reshape(-1, 3).mean(axis=0) / 255
    np.testing.assert_allclose(mean, (0.49, 0.48, 0.45), atol=0.02)


# --- CIFAR-10 through TFDS, without TensorFlow ---------------------------------------------------------------------

def _write_cifar10_binary(path: pathlib.Path, train, test):
    """A miniature cifar-10-binary.tar.gz: the train records spread over data_batch_1..5, plus test_batch."""
    from selectivity_jax.data.cifar10 import encode_records

    def add(archive, name, data):
        info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))

    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for i, part in enumerate(np.array_split(np.arange(len(train[1])), 5)):
            add(archive, f"data_batch_{i + 1}.bin", encode_records(train[0][part], train[1][part]))
        add(archive, "test_batch.bin", encode_records(*test))
        add(archive, "batches.meta.txt", "\n".join(CIFAR10_CLASSES).encode())


def _random_cifar(rng, n):
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int32)


def _assert_no_tensorflow():
    assert "tensorflow" not in sys.modules
    assert not [m for m in sys.modules if m.startswith("tensorflow.")]


def test_cifar10_records_round_trip():
    from selectivity_jax.data.cifar10 import encode_records, parse_records
    images, labels = _random_cifar(np.random.default_rng(0), 3)
    record = encode_records(images, labels)
    assert len(record) == 3 * 3073 and record[0] == labels[0] and record[1] == images[0, 0, 0, 0]
    assert record[2] == images[0, 0, 1, 0] and record[1 + 1024] == images[0, 0, 0, 1]  # CHW layout
    parsed_images, parsed_labels = parse_records(record)
    np.testing.assert_array_equal(parsed_images, images)
    np.testing.assert_array_equal(parsed_labels, labels)


def test_cifar10_numpy_prepares_and_reads_without_tensorflow(tmp_path):
    import tensorflow_datasets as tfds
    from selectivity_jax.data.cifar10 import load_cifar10

    rng = np.random.default_rng(0)
    train, test = _random_cifar(rng, 20), _random_cifar(rng, 10)
    _write_cifar10_binary(tmp_path / "tfds" / "downloads" / "manual" / "cifar-10-binary.tar.gz", train, test)
    data = load_cifar10(str(tmp_path / "tfds"))
    for split, (images, labels) in (("train", train), ("test", test)):
        assert data[split][0].dtype == np.uint8 and data[split][1].dtype == np.int32
        np.testing.assert_array_equal(data[split][0], images)  # PNG is lossless; archive order restored
        np.testing.assert_array_equal(data[split][1], labels)
    assert data["class_names"] == CIFAR10_CLASSES
    source = tfds.data_source("cifar10_numpy", split="test", data_dir=str(tmp_path / "tfds"), download=False)
    assert len(source) == 10 and source[0]["image"].shape == (32, 32, 3)
    assert tfds.builder("cifar10_numpy", data_dir=str(tmp_path / "tfds")).info.features["label"].names == list(
        CIFAR10_CLASSES)
    _assert_no_tensorflow()


def test_load_cifar10_auto_prefers_prepared_stock_cifar10(tmp_path):
    import tensorflow_datasets as tfds
    from selectivity_jax.data.cifar10 import _png_bytes, load_cifar10

    rng = np.random.default_rng(1)
    data = {"train": _random_cifar(rng, 6), "test": _random_cifar(rng, 4)}

    def examples(split):  # what the stock generator yields, with the image already PNG-encoded (TF-free)
        for i, (image, label) in enumerate(zip(*data[split])):
            yield i, {"id": f"{split}_{i:05d}", "image": _png_bytes(image), "label": int(label)}

    stock = tfds.builder("cifar10", data_dir=str(tmp_path), file_format="array_record")
    stock._split_generators = lambda dl_manager: {split: examples(split) for split in data}
    stock.download_and_prepare()
    loaded = load_cifar10(str(tmp_path))
    assert not (tmp_path / "cifar10_numpy").exists()  # read the stock data, did not prepare its own
    for split in data:
        np.testing.assert_array_equal(loaded[split][0], data[split][0])
        np.testing.assert_array_equal(loaded[split][1], data[split][1])
    _assert_no_tensorflow()


def test_cifar10_archive_falls_back_to_download(tmp_path):
    from selectivity_jax.data.cifar10 import ARCHIVE_URL, Cifar10Numpy

    class NoManualDir:
        @property
        def manual_dir(self):
            raise AssertionError("Manual directory not enabled.")

        def download(self, url):
            return f"downloaded:{url}"

    builder = Cifar10Numpy(data_dir=str(tmp_path))
    assert builder._archive_path(NoManualDir()) == f"downloaded:{ARCHIVE_URL}"


@pytest.mark.parametrize("builder", ["cifar10", "auto"])
def test_load_cifar10_under_mock_data(builder):
    import tensorflow_datasets as tfds
    from selectivity_jax.data.cifar10 import load_cifar10

    with tfds.testing.mock_data(num_examples=7, policy=tfds.testing.MockPolicy.USE_CODE):
        data = load_cifar10(None, builder=builder)
    for split in ("train", "test"):
        images, labels = data[split]
        assert images.shape == (7, 32, 32, 3) and images.dtype == np.uint8
        assert labels.shape == (7,) and labels.dtype == np.int32 and labels.min() >= 0 and labels.max() < 10
    _assert_no_tensorflow()


def test_load_cifar10_stock_not_prepared(tmp_path):
    from selectivity_jax.data.cifar10 import load_cifar10
    with pytest.raises(FileNotFoundError, match="cifar10_numpy"):
        load_cifar10(str(tmp_path), builder="cifar10")
    with pytest.raises(ValueError, match="builder"):
        load_cifar10(str(tmp_path), builder="cifar100")


# --- load_splits ------------------------------------------------------------------------------------------------------

def _synthetic_config(**overrides):
    config = ml_collections.ConfigDict(dict(name="synthetic", num_classes=4, num_per_class=15, test_per_class=5,
                                            image_size=8))
    config.update(overrides)
    return config


def test_load_splits_synthetic():
    from selectivity_jax.data import synthetic_images
    splits = load_splits(_synthetic_config(num_val=8), seed=0)
    assert splits.sizes() == {"train": 32, "val": 8, "test": 20}
    assert splits.num_classes == 4 and splits.image_shape == (8, 8, 3) and len(splits.class_names) == 4
    images, labels = synthetic_images(4, 15, 8, seed=0)
    np.testing.assert_array_equal(splits.test[0], images[-20:])  # classes interleave: last 5 of each class
    np.testing.assert_array_equal(np.bincount(splits.test[1]), [5, 5, 5, 5])
    same, other = load_splits(_synthetic_config(num_val=8), seed=0), load_splits(_synthetic_config(num_val=8), seed=1)
    np.testing.assert_array_equal(splits.val[0], same.val[0])
    assert not np.array_equal(splits.val[0], other.val[0])
    np.testing.assert_array_equal(splits.test[0], other.test[0])  # the test split does not depend on the seed


def test_load_splits_per_class_val_subsets_and_unknown_name():
    splits = load_splits(_synthetic_config(val_per_class=2, train_subset=12, test_subset=8), seed=0)
    assert splits.sizes() == {"train": 12, "val": 8, "test": 8}
    np.testing.assert_array_equal(np.bincount(splits.train[1]), [3, 3, 3, 3])
    np.testing.assert_array_equal(np.bincount(splits.val[1]), [2, 2, 2, 2])
    with pytest.raises(ValueError, match="synthetic"):
        load_splits(ml_collections.ConfigDict(dict(name="imagenet21k")), seed=0)


def test_load_splits_image_folder_cached(png_tree, tmp_path):
    root, expected = png_tree
    archive = _tar(root, tmp_path / "tree.tar.gz", "top")
    config = ml_collections.ConfigDict(dict(name="image_folder", root=str(archive), cache_dir=str(tmp_path / "cache"),
                                            val_per_class=1))
    splits = load_splits(config, seed=0)
    assert splits.sizes() == {"train": 9, "val": 3, "test": 6}
    assert splits.class_names == TREE_CLASSES and splits.num_classes == 3
    np.testing.assert_array_equal(splits.test[0], expected["test"][0])
    assert len(os.listdir(tmp_path / "cache")) == 1
    again = load_splits(config, seed=0)  # from the cache
    np.testing.assert_array_equal(again.train[0], splits.train[0])
    assert again.class_names == TREE_CLASSES


def test_load_splits_image_folder_class_mismatch(tmp_path):
    root = tmp_path / "tree"
    _write_tree(root)
    (root / "test" / "cat").rename(root / "test" / "dog")
    with pytest.raises(ValueError, match="differ"):
        load_splits(ml_collections.ConfigDict(dict(name="image_folder", root=str(root))), seed=0)


def test_load_splits_cifar10_mocked(tmp_path):
    import tensorflow_datasets as tfds
    config = ml_collections.ConfigDict(dict(name="cifar10", cache_dir=str(tmp_path), num_val=4))
    with tfds.testing.mock_data(num_examples=10, policy=tfds.testing.MockPolicy.USE_CODE):
        splits = load_splits(config, seed=0)
    assert splits.sizes() == {"train": 6, "val": 4, "test": 10}
    assert splits.image_shape == (32, 32, 3) and splits.class_names == CIFAR10_CLASSES
    assert os.listdir(tmp_path) == ["cifar10.npz"]
    _assert_no_tensorflow()
