"""Train / validation / test splits of in-memory arrays, seeded subsets, and an on-disk cache of decoded arrays."""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Callable

import numpy as np

Split = tuple[np.ndarray, np.ndarray]  # (uint8 images [N, H, W, C], int32 labels [N])
SPLIT_NAMES = ("train", "val", "test")


@dataclasses.dataclass(frozen=True, eq=False)
class ArraySplits:
    """The three splits of a data set as (images, labels) numpy pairs, with its class names."""
    train: Split
    val: Split
    test: Split
    num_classes: int
    class_names: tuple[str, ...]

    def __post_init__(self):
        for name in SPLIT_NAMES:
            images, labels = getattr(self, name)
            if len(images) != len(labels) or images.ndim != 4:
                raise ValueError(f"{name}: need images [N, H, W, C] and labels [N]; got {images.shape}, "
                                 f"{labels.shape}")
            if images.shape[1:] != self.train[0].shape[1:]:
                raise ValueError(f"{name} images are {images.shape[1:]}, train images {self.train[0].shape[1:]}")
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of every image."""
        return tuple(self.train[0].shape[1:])

    def sizes(self) -> dict[str, int]:
        """Number of examples per split."""
        return {name: len(getattr(self, name)[1]) for name in SPLIT_NAMES}


def _take(images: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> Split:
    """The examples at ``indices``, kept in data order."""
    indices = np.sort(indices)
    return images[indices], labels[indices]


def _val_indices(labels: np.ndarray, num_val: int, val_per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Seeded choice of validation indices: ``num_val`` in all, or ``val_per_class`` of every class."""
    permutation = rng.permutation(len(labels))
    if num_val:
        if num_val >= len(labels):
            raise ValueError(f"num_val={num_val} leaves no training data out of {len(labels)} examples")
        return permutation[:num_val]
    chosen = []
    for c in np.unique(labels):
        of_class = permutation[labels[permutation] == c]
        if len(of_class) <= val_per_class:
            raise ValueError(f"class {c} has {len(of_class)} examples: too few for val_per_class={val_per_class}")
        chosen.append(of_class[:val_per_class])
    return np.concatenate(chosen)


def split_train_val(images: np.ndarray, labels: np.ndarray, *, num_val: int = 0, val_per_class: int = 0,
                    seed: int) -> tuple[Split, Split]:
    """Draws a validation split out of a training split, as ((train images, labels), (val images, labels)).

    ``num_val`` random examples (CIFAR-10 protocol: 45k / 5k) or ``val_per_class`` random examples of every class
    (Tiny ImageNet protocol: 50 per class), chosen by ``seed``; both 0 gives an empty validation split. Both
    splits keep the data order; they are disjoint and together hold every example.
    """
    if num_val < 0 or val_per_class < 0 or (num_val and val_per_class):
        raise ValueError(f"need one of num_val={num_val}, val_per_class={val_per_class} > 0 (or both 0)")
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if not (num_val or val_per_class):
        return (images, labels), (images[:0], labels[:0])
    val = _val_indices(labels, num_val, val_per_class, np.random.default_rng(seed))
    is_train = np.ones(len(labels), bool)
    is_train[val] = False
    return _take(images, labels, np.flatnonzero(is_train)), _take(images, labels, val)


def stratified_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """A seeded permutation that deals the classes out in turn: any prefix holds every class about equally."""
    rng = np.random.default_rng(seed)
    permutation = rng.permutation(len(labels))
    shuffled = labels[permutation]
    by_class = np.argsort(shuffled, kind="stable")
    rank = np.empty(len(labels), np.int64)  # rank of each shuffled example among those of its class
    rank[by_class] = np.arange(len(labels)) - np.searchsorted(shuffled[by_class], shuffled[by_class])
    return permutation[np.lexsort((np.arange(len(labels)), rank))]


def subset(images: np.ndarray, labels: np.ndarray, n: int | None, seed: int) -> Split:
    """``n`` examples drawn by ``seed``, about equally many of every class, in data order (all for n None / 0)."""
    if not n or n >= len(labels):
        return images, labels
    if n < 0:
        raise ValueError(f"subset size must be >= 0, got {n}")
    return _take(images, labels, stratified_order(labels, seed)[:n])


def cached_arrays(cache_dir: str | os.PathLike | None, key: str,
                  build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """``build()``'s arrays, stored once as ``<cache_dir>/<key>.npz`` (uncompressed) and loaded from there later.

    The file is written to a temporary name and renamed, so an interrupted run never leaves a broken cache.
    ``cache_dir=None`` calls ``build()`` every time.
    """
    if cache_dir is None:
        return build()
    if not key or os.sep in key or key.startswith("."):
        raise ValueError(f"cache key must be a plain file name, got {key!r}")
    path = os.path.join(cache_dir, f"{key}.npz")
    if os.path.exists(path):
        with np.load(path, allow_pickle=False) as stored:
            return {name: stored[name] for name in stored.files}
    arrays = build()
    os.makedirs(cache_dir, exist_ok=True)
    temp_path = os.path.join(cache_dir, f".{key}.{uuid.uuid4().hex}.npz.tmp")  # unique; umask-respecting mode
    try:
        with open(temp_path, "xb") as file:
            np.savez(file, **arrays)
        os.replace(temp_path, path)
    except BaseException:
        if os.path.exists(temp_path):
            os.unlink(temp_path)
        raise
    return arrays
