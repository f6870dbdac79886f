"""Data sources, each returning uint8 images [N, H, W, C] and int32 labels [N], and ``load_splits`` over them.

``load_splits(data_config, seed)`` dispatches on ``data_config.name`` through ``SOURCES``; a new data set is one
more entry there. ``selectivity_jax.data.cifar10`` and ``selectivity_jax.data.tiny_imagenet`` (which import
TensorFlow Datasets) are only imported when CIFAR-10 or Tiny ImageNet is asked for.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from selectivity_jax.data.image_folder import content_key, load_image_folder, load_image_folder_splits
from selectivity_jax.data.splits import ArraySplits, Split, cached_arrays, split_train_val, subset
from selectivity_jax.data.synthetic import synthetic_images
from selectivity_jax.resources import doing


@dataclasses.dataclass(frozen=True, eq=False)
class TrainTest:
    """A data set as published: training and test split (no validation split yet) and the class names."""
    train: Split
    test: Split
    class_names: tuple[str, ...]


def _to_cache(data: TrainTest) -> dict[str, np.ndarray]:
    """TrainTest -> flat dict of arrays for ``cached_arrays``."""
    return {"train_images": data.train[0], "train_labels": data.train[1], "test_images": data.test[0],
            "test_labels": data.test[1], "class_names": np.asarray(data.class_names, dtype=str)}


def _from_cache(arrays: dict[str, np.ndarray]) -> TrainTest:
    """Inverse of ``_to_cache``."""
    return TrainTest((arrays["train_images"], arrays["train_labels"]), (arrays["test_images"], arrays["test_labels"]),
                     tuple(str(name) for name in arrays["class_names"]))


def _cached(config: Any, key: str, build: Callable[[], TrainTest]) -> TrainTest:
    """``build()``, cached in ``config.cache_dir`` (when set) under ``key``."""
    return _from_cache(cached_arrays(config.get("cache_dir", None), key, lambda: _to_cache(build())))


def tail_per_class(labels: np.ndarray, count: int) -> np.ndarray:
    """Boolean mask of the last ``count`` examples of every class."""
    mask = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        of_class = np.flatnonzero(labels == c)
        if len(of_class) <= count:
            raise ValueError(f"class {c} has {len(of_class)} examples: too few to hold out {count}")
        mask[of_class[len(of_class) - count:]] = True
    return mask


def _load_synthetic(config: Any) -> TrainTest:
    """The synthetic data set; the last ``test_per_class`` samples of every class are the test split."""
    num_classes = config.get("num_classes", 10)
    images, labels = synthetic_images(num_classes, config.get("num_per_class", 100), config.get("image_size", 32),
                                      seed=config.get("synthetic_seed", 0))
    is_test = tail_per_class(labels, config.get("test_per_class", 20))
    return TrainTest((images[~is_test], labels[~is_test]), (images[is_test], labels[is_test]),
                     tuple(f"class_{c}" for c in range(num_classes)))


def _load_cifar10(config: Any) -> TrainTest:
    """CIFAR-10 through TFDS (TF-free), cached as arrays."""
    def build() -> TrainTest:
        from selectivity_jax.data.cifar10 import load_cifar10  # imports TFDS: only when needed
        data = load_cifar10(config.get("data_dir", None), download=config.get("download", True))
        return TrainTest(data["train"], data["test"], tuple(data["class_names"]))
    return _cached(config, "cifar10", build)


def _load_tiny_imagenet(config: Any) -> TrainTest:
    """Tiny ImageNet through TFDS (TF-free): train, and the official validation set as test; cached as arrays."""
    def build() -> TrainTest:
        from selectivity_jax.data.tiny_imagenet import load_tiny_imagenet  # imports TFDS: only when needed
        data = load_tiny_imagenet(config.get("data_dir", None), download=config.get("download", True))
        return TrainTest(data["train"], data["test"], data["class_names"])
    return _cached(config, "tiny_imagenet", build)


def _folder_cache_key(root: str, image_size: int | None) -> str:
    """Cache key of an image folder's decoded arrays: changes with its content (`image_folder.content_key`: the
    archive's bytes, or every image file's name, size and times) and image_size. Files under other keys (older
    versions, older content) are left where they are and never read."""
    identity = f"{content_key(root, ('train', 'test'))}|{image_size}"
    name = os.path.basename(os.path.normpath(root)).split(".")[0] or "root"
    return f"image_folder_{name}_{hashlib.sha256(identity.encode()).hexdigest()[:16]}"


def _load_image_folder(config: Any) -> TrainTest:
    """An image folder (directory or tar archive) with train/ and test/ splits, cached as arrays."""
    root, image_size = config.get("root", None), config.get("image_size", None)
    if not root:
        raise ValueError("data.root must name the image folder (directory or .tar/.tar.gz archive)")

    def build() -> TrainTest:
        read = load_image_folder_splits(root, ("train", "test"), image_size=image_size)
        train_images, train_labels, train_classes = read["train"]
        test_images, test_labels, test_classes = read["test"]
        if test_classes != train_classes:
            raise ValueError(f"{root}: test classes {test_classes} differ from train classes {train_classes}")
        return TrainTest((train_images, train_labels), (test_images, test_labels), train_classes)
    return _cached(config, _folder_cache_key(root, image_size), build)


def _cache_hit(config: Any, key: str) -> bool:
    cache_dir = config.get("cache_dir", None)
    return bool(cache_dir) and os.path.exists(os.path.join(cache_dir, f"{key}.npz"))


def _check_synthetic(config: Any) -> None:
    if config.get("num_classes", 10) < 2:
        raise ValueError(f"data.num_classes={config.get('num_classes')}: class selectivity needs at least 2 classes")


def _check_cifar10(config: Any) -> None:
    if not _cache_hit(config, "cifar10"):
        from selectivity_jax.data.cifar10 import check_cifar10_available  # imports TFDS: only when needed
        check_cifar10_available(config.get("data_dir", None), download=config.get("download", True))


def _check_tiny_imagenet(config: Any) -> None:
    if not _cache_hit(config, "tiny_imagenet"):
        from selectivity_jax.data.tiny_imagenet import check_tiny_imagenet_available  # imports TFDS
        check_tiny_imagenet_available(config.get("data_dir", None), download=config.get("download", True))


def _check_image_folder(config: Any) -> None:
    root = config.get("root", None)
    if not root:
        raise ValueError("data.root must name the image folder (directory or .tar/.tar.gz archive)")
    if not os.path.exists(root):
        raise FileNotFoundError(f"data.root: image folder {root} does not exist (train/<class>/* and "
                                f"test/<class>/* images, a directory or .tar.gz; the CIFAR-10 one is made from the "
                                f"official binary release by: python -m experiments.make_cifar10_folder --archive "
                                f"cifar-10-binary.tar.gz --out {root})")
    if not os.access(root, os.R_OK):
        raise PermissionError(f"data.root: {root} is not readable")


@dataclasses.dataclass(frozen=True)
class Source:
    """How to load one data set, check that it can be loaded (without writing anything), its validation protocol
    when the config sets none, and its usual image shape and number of classes (what benchmarks that need no data
    on disk use; the loaded arrays are what runs use)."""
    load: Callable[[Any], TrainTest]
    check: Callable[[Any], None]
    num_val: int = 0
    val_per_class: int = 0
    image_shape: tuple[int, int, int] = (32, 32, 3)
    num_classes: int = 10
    sizes: Callable[[Any], tuple[int, int]] | None = None  # (train, test) examples before the validation split


def _synthetic_sizes(config: Any) -> tuple[int, int]:
    classes, test_per_class = config.get("num_classes", 10), config.get("test_per_class", 20)
    return classes * (config.get("num_per_class", 100) - test_per_class), classes * test_per_class


def _image_folder_sizes(config: Any) -> tuple[int, int]:
    from selectivity_jax.data.image_folder import count_images
    _check_image_folder(config)
    counts = count_images(config.root)
    return counts["train"], counts["test"]


# Data sets by config name.
SOURCES: dict[str, Source] = {
    "synthetic": Source(_load_synthetic, _check_synthetic, sizes=_synthetic_sizes),
    "cifar10": Source(_load_cifar10, _check_cifar10, num_val=5000, sizes=lambda _: (50_000, 10_000)),
    "tiny_imagenet": Source(_load_tiny_imagenet, _check_tiny_imagenet, val_per_class=50, image_shape=(64, 64, 3),
                            num_classes=200, sizes=lambda _: (100_000, 10_000)),
    "image_folder": Source(_load_image_folder, _check_image_folder, sizes=_image_folder_sizes),
}


def nominal_shape(data_config: Any) -> tuple[tuple[int, int, int], int]:
    """(image shape, number of classes) of a data set without loading it: the source's usual ones, or the config's
    ``image_size`` / ``num_classes`` where it sets them."""
    source = _source(data_config)
    size = data_config.get("image_size", None)
    image_shape = (size, size, source.image_shape[-1]) if size else source.image_shape
    return image_shape, data_config.get("num_classes", None) or source.num_classes


def nominal_split_sizes(data_config: Any) -> tuple[int, int, int]:
    """(train, validation, test) examples a run of ``data_config`` trains and evaluates on, without loading the data
    (an image folder is counted): what ahead-of-time compilation needs (`selectivity_jax.bench.compile_check`)."""
    source = _source(data_config)
    train, test = source.sizes(data_config)
    num_val, val_per_class = _validation_sizes(data_config, source)
    val = num_val or val_per_class * nominal_shape(data_config)[1]
    train_subset, test_subset = data_config.get("train_subset", 0), data_config.get("test_subset", 0)
    return min(train - val, train_subset or train), val, min(test, test_subset or test)


def _validation_sizes(config: Any, source: Source) -> tuple[int, int]:
    """(num_val, val_per_class): from the config when it sets either, else the source's protocol."""
    num_val, val_per_class = config.get("num_val", None), config.get("val_per_class", None)
    if num_val is None and val_per_class is None:
        return source.num_val, source.val_per_class
    return num_val or 0, val_per_class or 0


def _source(data_config: Any) -> Source:
    name = data_config.get("name", None)
    if name not in SOURCES:
        raise ValueError(f"unknown data set {name!r}; known: {sorted(SOURCES)}")
    return SOURCES[name]


def check_available(data_config: Any) -> None:
    """Raises (ValueError or an OSError naming what is missing) when the data set of ``data_config`` cannot be
    loaded, quickly and without writing anything: run before a run's first file is written."""
    _source(data_config).check(data_config)


def _check_classes(labels: np.ndarray, split: str, name: str) -> None:
    classes = len(np.unique(labels))
    if classes < 2:
        raise ValueError(f"the {split} split of {name} has {classes} class(es): class selectivity needs at least 2")


def load_splits(data_config: Any, seed: int) -> ArraySplits:
    """Loads the data set named ``data_config.name`` as train / val / test arrays; ``seed`` picks the validation
    split (drawn from the training split) and the optional ``train_subset`` (0 = all); an optional ``test_subset``
    is the same for every seed, so runs stay comparable."""
    source = _source(data_config)
    with doing("loading data"):
        data = source.load(data_config)
    _check_classes(data.train[1], "train", data_config.name)
    _check_classes(data.test[1], "test", data_config.name)
    num_val, val_per_class = _validation_sizes(data_config, source)
    train, val = split_train_val(*data.train, num_val=num_val, val_per_class=val_per_class, seed=seed)
    train = subset(*train, data_config.get("train_subset", 0), seed)
    test = subset(*data.test, data_config.get("test_subset", 0), 0)  # the same test examples for every seed
    return ArraySplits(train=train, val=val, test=test, num_classes=len(data.class_names),
                       class_names=data.class_names)


__all__ = ["ArraySplits", "SOURCES", "Source", "TrainTest", "cached_arrays", "check_available", "load_image_folder",
           "load_image_folder_splits", "load_splits", "nominal_shape", "nominal_split_sizes", "split_train_val",
           "subset", "synthetic_images", "tail_per_class"]
