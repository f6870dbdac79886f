"""Corrupted test splits: CIFAR-10-C (npy files, stock TFDS cifar10_corrupted), Tiny-ImageNet-C, generated
corruptions; alignment with the clean test split of ``load_splits``, aliases, the cache, errors."""

import io
import shutil
import sys
import types

import ml_collections
import numpy as np
import pytest
from PIL import Image

from selectivity_jax.data import load_splits, subset
from selectivity_jax.data.corrupted import (CIFAR10_C_CORRUPTIONS, CorruptedSplit, available_corruptions,
                                            canonical_corruption, check_corruptions, corrupted_split,
                                            corrupted_subset, read_cifar10_c, sources_note, stock_order)
from test_data import _random_cifar, _write_cifar10_binary
from test_tiny_imagenet import WNIDS, write_tiny_imagenet_zip

CIFAR_TEST = 12
OFFICIAL = ("fog", "glass_blur")  # the corruptions written into the miniature CIFAR-10-C


def _official_cifar(images: np.ndarray, corruption: str, severity: int) -> np.ndarray:
    """What the miniature CIFAR-10-C holds: a per-corruption, per-severity shift of the clean test images."""
    return ((images.astype(np.int32) + 40 * severity + 7 * OFFICIAL.index(corruption)) % 256).astype(np.uint8)


def _generated(images: np.ndarray, corruption: str, severity: int, seed: int = 0) -> np.ndarray:
    return (255 - images) // (severity + 1) + seed


@pytest.fixture
def fake_corruptions(monkeypatch):
    """Stands in for selectivity_jax.data.corruptions; records its calls."""
    calls = []

    def corrupt_images(images, corruption, severity, *, seed=0, constants=None):
        calls.append((corruption, severity, seed, constants, len(images)))
        return _generated(images, corruption, severity, seed).astype(np.uint8)

    module = types.ModuleType("selectivity_jax.data.corruptions")
    module.CORRUPTIONS = ("gaussian_noise", "glass_blur", "fog", "my_own")
    module.FAMILIES = {"noise": ("gaussian_noise",), "blur": ("glass_blur",), "weather": ("fog",),
                       "other": ("my_own",)}
    module.corrupt_images = corrupt_images
    monkeypatch.setitem(sys.modules, "selectivity_jax.data.corruptions", module)
    return calls


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """(data_dir with the miniature CIFAR-10 in its manual directory, CIFAR-10-C npy directory elsewhere)."""
    root = tmp_path_factory.mktemp("cifar")
    rng = np.random.default_rng(3)
    train, test = _random_cifar(rng, 20), _random_cifar(rng, CIFAR_TEST)
    _write_cifar10_binary(root / "tfds" / "downloads" / "manual" / "cifar-10-binary.tar.gz", train, test)
    npy = root / "released" / "CIFAR-10-C"
    npy.mkdir(parents=True)
    np.save(npy / "labels.npy", np.tile(test[1], 5).astype(np.uint8))
    for corruption in OFFICIAL:
        severities = [_official_cifar(test[0], corruption, s) for s in range(1, 6)]
        np.save(npy / f"{corruption}.npy", np.concatenate(severities))
    return root / "tfds", npy


def _cifar_config(data_dir, cache_dir=None, **overrides):
    config = ml_collections.ConfigDict(dict(name="cifar10", data_dir=str(data_dir), num_val=4, test_subset=0,
                                            cache_dir=cache_dir and str(cache_dir)))
    config.update(overrides)
    return config


# --- CIFAR-10-C -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("test_subset", [0, 5])
def test_cifar10_c_npy_aligned_with_clean_test_split(cifar, test_subset):
    data_dir, npy = cifar
    config = _cifar_config(data_dir, test_subset=test_subset)
    clean_images, clean_labels = load_splits(config, seed=1).test
    for given in (npy, npy.parent):  # the CIFAR-10-C directory or the directory holding it
        split = corrupted_split(config, "fog", 3, corrupted_dir=given)
        assert isinstance(split, CorruptedSplit) and split.source == "official" and "fog.npy" in split.origin
        assert (split.corruption, split.severity) == ("fog", 3)
        assert split.images.dtype == np.uint8 and split.labels.dtype == np.int32
        np.testing.assert_array_equal(split.images, _official_cifar(clean_images, "fog", 3))
        np.testing.assert_array_equal(split.labels, clean_labels)
    assert len(split.labels) == (test_subset or CIFAR_TEST)


def test_cifar10_c_aliases_config_field_and_manual_dir(cifar, tmp_path):
    data_dir, npy = cifar
    clean = load_splits(_cifar_config(data_dir), seed=0).test[0]
    for name in ("frosted_glass_blur", "glass_blur", "Glass_Blur"):
        split = corrupted_split(_cifar_config(data_dir, corrupted_dir=str(npy)), name, 5)
        assert split.corruption == "glass_blur" and split.source == "official"
        np.testing.assert_array_equal(split.images, _official_cifar(clean, "glass_blur", 5))
    assert canonical_corruption("elastic") == "elastic_transform"
    manual = tmp_path / "tfds" / "downloads" / "manual"  # the released directory in TFDS's manual directory
    shutil.copytree(data_dir / "downloads" / "manual", manual)
    shutil.copytree(npy, manual / "CIFAR-10-C")
    split = corrupted_split(_cifar_config(tmp_path / "tfds"), "fog", 1, source="official")
    np.testing.assert_array_equal(split.images, _official_cifar(clean, "fog", 1))
    images, labels = read_cifar10_c(npy, "fog", 2)
    assert images.shape == (CIFAR_TEST, 32, 32, 3) and labels.dtype == np.int32


def test_stock_cifar10_corrupted_is_put_back_in_test_order(cifar, tmp_path):
    import tensorflow_datasets as tfds
    from selectivity_jax.data.cifar10 import _png_bytes
    data_dir, _ = cifar
    clean_images, clean_labels = load_splits(_cifar_config(data_dir), seed=0).test
    stock_dir = tmp_path / "stock"
    shutil.copytree(data_dir, stock_dir)
    corrupted = _official_cifar(clean_images, "glass_blur", 2)

    def examples():  # what the stock generator yields (integer keys in test order), images already PNG (TF-free)
        for i, (image, label) in enumerate(zip(corrupted, clean_labels)):
            yield i, {"image": _png_bytes(image), "label": int(label)}

    stock = tfds.builder("cifar10_corrupted/frosted_glass_blur_2", data_dir=str(stock_dir), file_format="array_record")
    stock._split_generators = lambda dl_manager: {"test": examples()}
    stock.download_and_prepare()
    stored = stock.as_data_source(split="test")
    assert not np.array_equal(stock_order(len(stored)), np.arange(len(stored)))  # TFDS did shuffle the records
    assert [int(stored[j]["label"]) for j in range(len(stored))] == list(clean_labels[stock_order(len(stored))])

    split = corrupted_split(_cifar_config(stock_dir), "glass_blur", 2)
    assert split.source == "official" and "cifar10_corrupted/frosted_glass_blur_2" in split.origin
    np.testing.assert_array_equal(split.images, corrupted)
    np.testing.assert_array_equal(split.labels, clean_labels)
    assert available_corruptions(_cifar_config(stock_dir), "official") == ()  # 1 of 5 severities prepared
    assert "tensorflow" not in sys.modules


def test_cifar10_generated_when_official_absent(cifar, tmp_path, fake_corruptions):
    data_dir, npy = cifar
    config = _cifar_config(data_dir, cache_dir=tmp_path / "cache", test_subset=6)
    clean_images, clean_labels = load_splits(config, seed=0).test
    split = corrupted_split(config, "gaussian_noise", 2, seed=3)  # not in the miniature CIFAR-10-C: generated
    assert split.source == "generated" and "not the official" in split.origin
    np.testing.assert_array_equal(split.images, _generated(clean_images, "gaussian_noise", 2, seed=3))
    np.testing.assert_array_equal(split.labels, clean_labels)
    assert fake_corruptions == [("gaussian_noise", 2, 3, None, 6)]
    again = corrupted_split(config, "gaussian_noise", 2, seed=3)  # from the cache
    np.testing.assert_array_equal(again.images, split.images)
    assert len(fake_corruptions) == 1 and again.source == "generated"
    assert sum(p.name.startswith("corrupted_cifar10_gaussian_noise_2_") for p in (tmp_path / "cache").iterdir()) == 1
    generated = corrupted_split(config, "fog", 2, source="generated", corrupted_dir=npy)  # present, not asked for
    assert generated.source == "generated" and len(fake_corruptions) == 2
    assert available_corruptions(config, "official", corrupted_dir=npy) == ("glass_blur", "fog")
    assert available_corruptions(config, corrupted_dir=npy) == ("gaussian_noise", "glass_blur", "fog", "my_own")
    assert available_corruptions(config, "generated") == ("gaussian_noise", "glass_blur", "fog", "my_own")


def test_cifar10_errors(cifar, tmp_path):
    data_dir, npy = cifar
    config = _cifar_config(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="zenodo.org/record/2535967/files/CIFAR-10-C.tar") as error:
        corrupted_split(config, "fog", 1, source="official")
    assert str(tmp_path / "empty" / "downloads" / "manual") in str(error.value)
    with pytest.raises(ValueError, match="no corruption"):
        corrupted_split(config, "my_own", 1, source="official", corrupted_dir=npy)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        corrupted_split(config, "fog", 1, corrupted_dir=tmp_path / "typo")
    for severity in (0, 6, 2.5, True):
        with pytest.raises(ValueError, match="severity"):
            corrupted_split(config, "fog", severity, corrupted_dir=npy)
    with pytest.raises(ValueError, match="source"):
        corrupted_split(config, "fog", 1, source="stock")
    assert len(CIFAR10_C_CORRUPTIONS) == 19


# --- generated corruptions of any data set --------------------------------------------------------------------------

def test_generated_synthetic_matches_clean_split(tmp_path, fake_corruptions):
    config = ml_collections.ConfigDict(dict(name="synthetic", num_classes=4, num_per_class=15, test_per_class=5,
                                            image_size=8, num_val=8, test_subset=8, cache_dir=str(tmp_path)))
    clean_images, clean_labels = load_splits(config, seed=2).test
    split = corrupted_split(config, "fog", 4)
    np.testing.assert_array_equal(split.images, _generated(clean_images, "fog", 4))
    np.testing.assert_array_equal(split.labels, clean_labels)
    assert split.source == "generated" and len(split.labels) == 8
    assert corrupted_split("synthetic", "fog", 4).images.shape == (200, 32, 32, 3)  # a plain name: defaults
    with pytest.raises(FileNotFoundError, match="no official corrupted set"):
        corrupted_split(config, "fog", 4, source="official")
    with pytest.raises(ValueError, match="unknown generated corruption"):
        corrupted_split(config, "no_such_thing", 4)
    assert available_corruptions(config, "official") == ()


def test_what_the_analyses_share(tmp_path, fake_corruptions):
    """corrupted_subset picks the corruptions of the clean subset's examples; settings checks; the sources note."""
    config = ml_collections.ConfigDict(dict(name="synthetic", num_classes=4, num_per_class=15, test_per_class=5,
                                            image_size=8, num_val=8, cache_dir=str(tmp_path)))
    clean_images, clean_labels = load_splits(config, seed=2).test
    images, labels, split = corrupted_subset(config, "fog", 2, source="auto", test_labels=clean_labels,
                                             num_examples=8, seed=1)
    expected_images, expected_labels = subset(_generated(clean_images, "fog", 2), clean_labels, 8, 1)
    np.testing.assert_array_equal(images, expected_images)
    np.testing.assert_array_equal(labels, expected_labels)
    assert split.source == "generated" and len(split.labels) == len(clean_labels) > len(labels) == 8
    with pytest.raises(ValueError, match="not aligned with the run's test split"):
        corrupted_subset(config, "fog", 2, source="auto", test_labels=(clean_labels + 1) % 4, num_examples=8, seed=1)
    check_corruptions(["fog", "frosted_glass_blur", "my_own"], [1, 5], "auto", "here")  # aliases, generated names
    for names, severities, source, message in ((["rain"], [1], "auto", r"^here: unknown corruptions \['rain'\]"),
                                                (["glass_blur", "frosted_glass_blur"], [1], "auto", "more than once"),
                                                (["fog"], [0, 6], "auto", r"severities .* got \[0, 6\]"),
                                                (["fog"], [1], "stock", "source must be one of")):
        with pytest.raises(ValueError, match=message):
            check_corruptions(names, severities, source, "here")
    generated = " Generated = made by selectivity_jax.data.corruptions, not the released benchmark."
    assert sources_note({"fog": "official", "glass_blur": "official"}) == "Corrupted images: official."
    assert sources_note({"fog": "generated"}) == "Corrupted images: generated." + generated
    assert sources_note({"fog": "official", "my_own": "generated", "glass_blur": "official+generated"}) == (
        "Corrupted images: generated (my_own); official (fog); official+generated (glass_blur)." + generated)


def test_generated_without_the_corruptions_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "selectivity_jax.data.corruptions", None)  # import fails
    with pytest.raises(ImportError, match="selectivity_jax.data.corruptions"):
        corrupted_split("synthetic", "fog", 1)


# --- Tiny-ImageNet-C ------------------------------------------------------------------------------------------------

def _write_c_tree(root, expected, corruption="fog", severities=(1, 2, 3, 4, 5), skip=None):
    """Tiny-ImageNet-C/<corruption>/<severity>/<wnid>/val_<k>.JPEG: severity 1 holds the clean bytes, severity s a
    darkened copy (image // s). Returns {(severity, file name): the image as Pillow decodes it}."""
    written = {}
    for severity in severities:
        for name, data in expected["val_bytes"].items():
            if name == skip:
                continue
            folder = root / "Tiny-ImageNet-C" / corruption / str(severity) / expected["val_wnids"][name]
            folder.mkdir(parents=True, exist_ok=True)
            if severity > 1:
                buffer = io.BytesIO()
                image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) // severity
                Image.fromarray(image).save(buffer, "JPEG")
                data = buffer.getvalue()
            (folder / name).write_bytes(data)
            written[severity, name] = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    return written


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(data_dir with tiny_imagenet prepared and Tiny-ImageNet-C 'fog' in its manual directory, expected)."""
    from selectivity_jax.data.tiny_imagenet import prepare_tiny_imagenet
    data_dir = tmp_path_factory.mktemp("tinyc") / "tfds"
    manual = data_dir / "downloads" / "manual"
    expected = write_tiny_imagenet_zip(manual / "tiny-imagenet-200.zip", train_per_class=3, val_per_class=3)
    prepare_tiny_imagenet(str(data_dir), download=False)
    expected["c_images"] = _write_c_tree(manual, expected)
    return data_dir, expected


def test_tiny_imagenet_c_aligned_by_file_name(tiny):
    import tensorflow_datasets as tfds
    data_dir, expected = tiny
    config = ml_collections.ConfigDict(dict(name="tiny_imagenet", data_dir=str(data_dir), val_per_class=1))
    clean_images, clean_labels = load_splits(config, seed=0).test
    split = corrupted_split(config, "fog", 1)
    assert split.source == "official" and "tiny_imagenet_c/fog_1" in split.origin
    np.testing.assert_array_equal(split.images, clean_images)  # severity 1 holds the clean JPEG bytes
    np.testing.assert_array_equal(split.labels, clean_labels)
    builder = tfds.builder("tiny_imagenet_c/fog_1", data_dir=str(data_dir))
    assert builder.info.features["label"].names == list(WNIDS)
    subset_config = ml_collections.ConfigDict(dict(config.to_dict(), test_subset=4))
    clean_subset = load_splits(subset_config, seed=0).test
    split = corrupted_split(subset_config, "fog", 3, source="official")
    np.testing.assert_array_equal(split.labels, clean_subset[1])
    chosen, _ = subset(np.arange(len(clean_labels)), clean_labels, 4, 0)  # the test_subset's examples
    names = [expected["test_ids"][i] for i in chosen]
    np.testing.assert_array_equal(split.images, np.stack([expected["c_images"][3, name] for name in names]))
    assert available_corruptions(config, "official") == ("fog",)


def test_tiny_imagenet_c_elsewhere_missing_and_misaligned(tiny, tmp_path, fake_corruptions):
    data_dir, expected = tiny
    config = ml_collections.ConfigDict(dict(name="tiny_imagenet", data_dir=str(data_dir), cache_dir=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="Tiny-ImageNet-C.tar") as error:
        corrupted_split(config, "snow", 2, source="official")
    assert str(data_dir / "downloads" / "manual") in str(error.value)
    split = corrupted_split(config, "glass_blur", 2)  # auto: not there, so generated
    assert split.source == "generated" and split.images.shape == (9, 64, 64, 3)
    elsewhere = tmp_path / "elsewhere"  # a tree with one file missing, given as corrupted_dir
    _write_c_tree(elsewhere, expected, corruption="snow", severities=(2,), skip="val_4.JPEG")
    with pytest.raises(ValueError, match="cannot align"):
        corrupted_split(config, "snow", 2, corrupted_dir=elsewhere / "Tiny-ImageNet-C")
