"""Corrupted test splits in the format and example order of the clean test split of ``load_splits``.

``corrupted_split(data_config, corruption, severity)`` returns example i = the corruption of clean test example i:

- 'official' sets: CIFAR-10-C from the released ``CIFAR-10-C/<corruption>.npy`` files (uint8 [50000, 32, 32, 3]:
  severities 1..5 in blocks of 10,000 in CIFAR-10's test order, plus ``labels.npy``) or from a stock TFDS
  ``cifar10_corrupted`` prepared as ArrayRecord (its shuffled order is undone by TFDS's key hash); Tiny-ImageNet-C
  through the ``tiny_imagenet_c`` builder (aligned by file name, ``val_<k>.JPEG``);
- 'generated' corruptions of the clean test split by ``selectivity_jax.data.corruptions`` (cached in the data
  config's ``cache_dir``), labelled as generated, never as the official sets.

Corruptions go by Hendrycks & Dietterich's names; TFDS's ``frosted_glass_blur`` and ``elastic`` are aliases of
``glass_blur`` and ``elastic_transform``. ``test_subset`` of the data config picks the same examples as for the clean
split. Nothing downloads: the official sets are read where the user put them. `corrupted_subset`, `check_corruptions`
and `sources_note` are what the analyses that read corrupted sets share (corruptions, dimensionality).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from selectivity_jax.data import SOURCES, cached_arrays, subset

BENCHMARK_CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
                         "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
                         "jpeg_compression")
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
CIFAR10_C_CORRUPTIONS = BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS
TFDS_NAMES = {"glass_blur": "frosted_glass_blur", "elastic_transform": "elastic"}  # Hendrycks -> TFDS cifar10_corrupted
ALIASES = {tfds_name: name for name, tfds_name in TFDS_NAMES.items()}
SEVERITIES = (1, 2, 3, 4, 5)
SOURCE_CHOICES = ("auto", "official", "generated")
CIFAR10_C_DIRNAME = "CIFAR-10-C"
CIFAR10_C_URL = "https://zenodo.org/record/2535967/files/CIFAR-10-C.tar"
_STOCK_SPLIT = "test"  # the split name TFDS salts its key hash with


@dataclasses.dataclass(frozen=True, eq=False)
class CorruptedSplit:
    """A corrupted test split: images uint8 [N, H, W, 3], labels int32 [N] (those of the clean test split), the
    corruption (Hendrycks' name) and severity, ``source`` 'official' or 'generated', and ``origin``: what was read
    or how the images were made."""
    images: np.ndarray
    labels: np.ndarray
    corruption: str
    severity: int
    source: str
    origin: str


Official = tuple[np.ndarray, np.ndarray, str]  # (images, labels, origin) of the whole official test split


def canonical_corruption(name: str) -> str:
    """Hendrycks' name of a corruption ('frosted_glass_blur' -> 'glass_blur', 'elastic' -> 'elastic_transform')."""
    name = str(name).strip().lower()
    return ALIASES.get(name, name)


def _data_config(dataset: Any) -> ml_collections.ConfigDict:
    """A data config from a data config, a run config (its ``.data``), a mapping or a plain data set name."""
    if isinstance(dataset, str):
        return ml_collections.ConfigDict({"name": dataset})
    if isinstance(dataset, Mapping) or isinstance(dataset, ml_collections.ConfigDict):
        config = dataset if isinstance(dataset, ml_collections.ConfigDict) else ml_collections.ConfigDict(dict(dataset))
        if "name" not in config and "data" in config:
            config = config.data
        if config.get("name", None) is None:
            raise ValueError("the data config has no 'name'")
        return config
    raise TypeError(f"expected a data config or a data set name, got {type(dataset).__name__}")


def _check_severity(severity: int) -> int:
    if isinstance(severity, bool) or int(severity) != severity or int(severity) not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    return int(severity)


# --- CIFAR-10-C -----------------------------------------------------------------------------------------------------

def find_cifar10_c_dir(path: str | os.PathLike) -> str | None:
    """The CIFAR-10-C directory (holding labels.npy) at ``path`` or ``path/CIFAR-10-C``, else None."""
    for candidate in (os.fspath(path), os.path.join(os.fspath(path), CIFAR10_C_DIRNAME)):
        if os.path.isfile(os.path.join(candidate, "labels.npy")):
            return candidate
    return None


def read_cifar10_c(directory: str | os.PathLike, corruption: str, severity: int) -> tuple[np.ndarray, np.ndarray]:
    """One severity of a released CIFAR-10-C ``<corruption>.npy``: (uint8 [N, 32, 32, 3], int32 [N]), N = 10,000
    in CIFAR-10's test order (severity s is rows (s-1)N..sN-1 of the file)."""
    corruption, severity = canonical_corruption(corruption), _check_severity(severity)
    path = os.path.join(os.fspath(directory), f"{corruption}.npy")
    images = np.load(path, mmap_mode="r")
    labels = np.load(os.path.join(os.fspath(directory), "labels.npy"))
    n = len(labels) // len(SEVERITIES)
    if (images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or len(images) != len(labels)
            or len(labels) != n * len(SEVERITIES)):
        raise ValueError(f"{path}: expected uint8 [5N, H, W, 3] images and 5N labels; got {images.dtype} "
                         f"{images.shape} and {labels.shape}")
    blocks = labels.reshape(len(SEVERITIES), n)
    if not (blocks == blocks[:1]).all():
        raise ValueError(f"{directory}/labels.npy: the 5 severity blocks do not repeat the same labels")
    part = slice((severity - 1) * n, severity * n)
    return np.ascontiguousarray(images[part]), blocks[0].astype(np.int32)


def stock_order(n: int, split: str = _STOCK_SPLIT) -> np.ndarray:
    """Key (0..n-1) of each record of a TFDS split whose generator yielded integer keys 0..n-1: TFDS stores
    examples sorted by the salted md5 hash of their keys, so record j holds key ``stock_order(n)[j]``."""
    from tensorflow_datasets.core import hashing
    hasher = hashing.Hasher(split)
    return np.asarray(sorted(range(n), key=hasher.hash_key), np.int64)


def _stock_config(corruption: str, severity: int) -> str:
    return f"cifar10_corrupted/{TFDS_NAMES.get(corruption, corruption)}_{severity}"


def _readable_stock(name: str, data_dir: str | None) -> Any:
    """The builder of a stock TFDS data set ``name`` ('dataset/config') when it is prepared under ``data_dir`` in a
    random-access format (what ``tfds.data_source`` reads without TensorFlow), else None."""
    import tensorflow_datasets as tfds
    from selectivity_jax.data.tiny_imagenet import data_root
    if not os.path.isdir(os.path.join(data_root(data_dir), *name.split("/"))):
        return None
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        if builder.is_prepared() and builder.info.available_file_formats() & set(
                tfds.core.FileFormat.with_random_access()):
            return builder
    except Exception:  # noqa: BLE001 - unreadable stock metadata: treat as absent
        return None
    return None


def read_stock_cifar10_corrupted(builder: Any, batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """The test split of a prepared stock ``cifar10_corrupted`` config, put back in CIFAR-10's test order."""
    from selectivity_jax.data.cifar10 import read_batch
    source = builder.as_data_source(split=_STOCK_SPLIT)
    images, labels = [], []
    for start in range(0, len(source), batch_size):
        for example in read_batch(source, list(range(start, min(start + batch_size, len(source))))):
            images.append(np.asarray(example["image"], np.uint8))
            labels.append(int(np.asarray(example["label"])))
    stored, keys = np.stack(images), stock_order(len(labels))
    ordered_images, ordered_labels = np.empty_like(stored), np.empty(len(labels), np.int32)
    ordered_images[keys], ordered_labels[keys] = stored, labels
    return ordered_images, ordered_labels


def _cifar10_c_dir(config: ml_collections.ConfigDict, corrupted_dir: str | None) -> str | None:
    """The CIFAR-10-C npy directory: ``corrupted_dir`` (argument, else ``config.corrupted_dir``; must exist), else
    ``<manual dir>/CIFAR-10-C`` when there; None when absent."""
    from selectivity_jax.data.tiny_imagenet import default_manual_dir
    given = corrupted_dir or config.get("corrupted_dir", None)
    if given:
        if not os.path.exists(given):
            raise FileNotFoundError(f"corrupted_dir {given} does not exist")
        return find_cifar10_c_dir(given)
    return find_cifar10_c_dir(os.path.join(default_manual_dir(config.get("data_dir", None)), CIFAR10_C_DIRNAME))


def _official_cifar10(config: ml_collections.ConfigDict, corruption: str, severity: int,
                      corrupted_dir: str | None) -> Official | None:
    """CIFAR-10-C from the npy directory, else from a prepared stock cifar10_corrupted; None when neither."""
    directory = _cifar10_c_dir(config, corrupted_dir)
    if directory and os.path.isfile(os.path.join(directory, f"{corruption}.npy")):
        images, labels = read_cifar10_c(directory, corruption, severity)
        return images, labels, f"CIFAR-10-C {os.path.join(directory, corruption)}.npy, severity {severity}"
    builder = _readable_stock(_stock_config(corruption, severity), config.get("data_dir", None))
    if builder is not None:
        images, labels = read_stock_cifar10_corrupted(builder)
        return images, labels, f"TFDS {_stock_config(corruption, severity)} in {builder.data_dir_root}"
    return None


def _cifar10_missing(config: ml_collections.ConfigDict, corrupted_dir: str | None = None) -> str:
    from selectivity_jax.data.tiny_imagenet import default_manual_dir
    manual_dir = default_manual_dir(config.get("data_dir", None))
    given = corrupted_dir or config.get("corrupted_dir", None)
    return ((f"{given} holds no such CIFAR-10-C file; " if given else "") +
            f"download {CIFAR10_C_URL} and extract it into {manual_dir} (giving "
            f"{os.path.join(manual_dir, CIFAR10_C_DIRNAME, '<corruption>.npy')} and labels.npy), or pass "
            "corrupted_dir= / set data.corrupted_dir to the extracted CIFAR-10-C directory; a stock TFDS "
            "cifar10_corrupted prepared as ArrayRecord in data_dir is read too")


# --- Tiny-ImageNet-C ------------------------------------------------------------------------------------------------

def _tiny_manual_dir(config: ml_collections.ConfigDict, corrupted_dir: str | None) -> str:
    from selectivity_jax.data.tiny_imagenet import default_manual_dir
    given = corrupted_dir or config.get("corrupted_dir", None)
    if given and not os.path.exists(given):
        raise FileNotFoundError(f"corrupted_dir {given} does not exist")
    return given or default_manual_dir(config.get("data_dir", None))


def _tiny_c_present(config: ml_collections.ConfigDict, corruption: str, severity: int, manual_dir: str) -> bool:
    """Whether tiny_imagenet_c/<corruption>_<severity> is prepared in data_dir or its tree is in manual_dir."""
    from selectivity_jax.data import tiny_imagenet
    if corruption not in tiny_imagenet.C_CORRUPTIONS:
        return False
    if _readable_stock(f"tiny_imagenet_c/{corruption}_{severity}", config.get("data_dir", None)) is not None:
        return True
    tree = tiny_imagenet.find_c_tree(manual_dir)
    return tree is not None and os.path.isdir(os.path.join(tree, corruption, str(severity)))


def _check_against_clean(data_dir: str | None, labels: np.ndarray, ids: list[str], what: str) -> None:
    """Checks file names and labels against the prepared clean tiny_imagenet validation split (when prepared)."""
    import tensorflow_datasets as tfds
    from selectivity_jax.data.tiny_imagenet import example_order
    builder = tfds.builder("tiny_imagenet", data_dir=data_dir)
    if not builder.is_prepared():
        return
    source = builder.as_data_source(split="validation", decoders={"image": tfds.decode.SkipDecoding()})
    clean = [source[i] for i in range(len(source))]
    clean_ids = [e["id"].decode() if isinstance(e["id"], bytes) else str(e["id"]) for e in clean]
    order = example_order(clean_ids)
    clean_ids = [clean_ids[i] for i in order]
    clean_labels = np.asarray([int(clean[i]["label"]) for i in order], np.int32)
    if clean_ids != ids:
        missing, extra = sorted(set(clean_ids) - set(ids))[:5], sorted(set(ids) - set(clean_ids))[:5]
        raise ValueError(f"{what}: file names differ from the clean validation set (missing e.g. {missing}, "
                         f"unexpected e.g. {extra}); cannot align the examples")
    if not np.array_equal(clean_labels, labels):
        raise ValueError(f"{what}: labels differ from the clean validation set's for the same file names")


def _official_tiny_imagenet(config: ml_collections.ConfigDict, corruption: str, severity: int,
                            corrupted_dir: str | None) -> Official | None:
    """Tiny-ImageNet-C through the tiny_imagenet_c builder (prepared on first use); None when absent."""
    from selectivity_jax.data.tiny_imagenet import load_tiny_imagenet_c
    manual_dir = _tiny_manual_dir(config, corrupted_dir)
    if not _tiny_c_present(config, corruption, severity, manual_dir):
        return None
    data_dir = config.get("data_dir", None)
    images, labels, ids = load_tiny_imagenet_c(data_dir, corruption, severity, manual_dir=manual_dir)
    what = f"TFDS tiny_imagenet_c/{corruption}_{severity}"
    _check_against_clean(data_dir, labels, ids, what)
    return images, labels, what


def _tiny_missing(config: ml_collections.ConfigDict, corrupted_dir: str | None = None) -> str:
    from selectivity_jax.data.tiny_imagenet import C_URL, C_DIRNAME
    manual_dir = _tiny_manual_dir(config, corrupted_dir)
    return (f"download {C_URL} and extract it into {manual_dir} (giving {os.path.join(manual_dir, C_DIRNAME)}/"
            "<corruption>/<severity>/<wnid>/*.JPEG), or pass corrupted_dir= / set data.corrupted_dir to the "
            "directory holding it")


# --- the uniform loader ---------------------------------------------------------------------------------------------

# Data sets with an official corrupted set: (reader, message saying how to get it, its corruptions).
_OFFICIAL = {"cifar10": (_official_cifar10, _cifar10_missing, CIFAR10_C_CORRUPTIONS),
             "tiny_imagenet": (_official_tiny_imagenet, _tiny_missing, BENCHMARK_CORRUPTIONS)}


def _official(config: ml_collections.ConfigDict, corruption: str, severity: int, corrupted_dir: str | None,
              required: bool) -> Official | None:
    """The whole official corrupted test split, or None (an error when ``required``)."""
    name = config.name
    if name not in _OFFICIAL:
        if required:
            raise FileNotFoundError(f"there is no official corrupted set of {name!r} (only of {sorted(_OFFICIAL)}): "
                                    "use source='generated'")
        return None
    read, missing, corruptions = _OFFICIAL[name]
    if corruption not in corruptions:
        if required:
            raise ValueError(f"the official corrupted {name} has no corruption {corruption!r}; it has {corruptions}")
        return None
    found = read(config, corruption, severity, corrupted_dir)
    if found is None and required:
        raise FileNotFoundError(f"the official corrupted {name} ({corruption}, severity {severity}) is not there: "
                                f"{missing(config, corrupted_dir)}")
    return found


def _corruptions_module() -> Any:
    """``selectivity_jax.data.corruptions`` (CORRUPTIONS, corrupt_images), imported on first use."""
    try:
        return importlib.import_module("selectivity_jax.data.corruptions")
    except ImportError as error:
        raise ImportError(f"generated corruptions need selectivity_jax.data.corruptions: {error}") from error


def clean_test_split(config: ml_collections.ConfigDict) -> tuple[np.ndarray, np.ndarray]:
    """The clean test split exactly as ``load_splits`` returns it (``test_subset`` drawn with seed 0)."""
    if config.name not in SOURCES:
        raise ValueError(f"unknown data set {config.name!r}; known: {sorted(SOURCES)}")
    data = SOURCES[config.name].load(config)
    return subset(*data.test, config.get("test_subset", 0), 0)


def _generated(config: ml_collections.ConfigDict, corruption: str, severity: int, seed: int,
               constants: str | None) -> CorruptedSplit:
    """Generated corruptions of the clean test split (after ``test_subset``), cached in ``config.cache_dir``."""
    module = _corruptions_module()
    if corruption not in module.CORRUPTIONS:
        raise ValueError(f"unknown generated corruption {corruption!r}; known: {tuple(module.CORRUPTIONS)}")
    images, labels = clean_test_split(config)
    digest = hashlib.sha1()
    for part in (images.tobytes(), labels.tobytes(), repr((images.shape, corruption, severity, seed, constants))):
        digest.update(part if isinstance(part, bytes) else part.encode())
    key = f"corrupted_{config.name}_{corruption}_{severity}_{digest.hexdigest()[:16]}"

    def build() -> dict[str, np.ndarray]:
        corrupted = np.asarray(module.corrupt_images(images, corruption, severity, seed=seed, constants=constants))
        if corrupted.shape != images.shape or corrupted.dtype != np.uint8:
            raise ValueError(f"corrupt_images returned {corrupted.dtype} {corrupted.shape}, expected uint8 "
                             f"{images.shape}")
        return {"images": corrupted, "labels": labels, "source": np.asarray("generated")}

    arrays = cached_arrays(config.get("cache_dir", None), key, build)
    origin = (f"generated by selectivity_jax.data.corruptions from the clean {config.name} test split (seed {seed}, "
              f"constants {constants}); not the official corrupted set")
    return CorruptedSplit(arrays["images"], arrays["labels"].astype(np.int32), corruption, severity, "generated",
                          origin)


def corrupted_split(dataset: Any, corruption: str, severity: int, *, source: str = "auto",
                    corrupted_dir: str | os.PathLike | None = None, seed: int = 0,
                    constants: str | None = None) -> CorruptedSplit:
    """The test split of ``dataset`` with ``corruption`` at ``severity`` (1..5), aligned with the clean test split.

    Args:
      dataset: the data config of a run (``config.data``: name, data_dir, cache_dir, test_subset, corrupted_dir,
        ...), a run config, or a data set name.
      corruption: Hendrycks' name ('glass_blur', ...; TFDS's 'frosted_glass_blur' / 'elastic' are accepted).
      source: 'official' (the released set; an error saying how to get it when absent), 'generated'
        (``selectivity_jax.data.corruptions``), or 'auto' (official when present, else generated).
      corrupted_dir: CIFAR-10-C: the extracted CIFAR-10-C directory (or its parent); Tiny-ImageNet-C: the directory
        holding the extracted Tiny-ImageNet-C tree. Default ``data.corrupted_dir``, else TFDS's manual directory.
      seed, constants: passed to ``corrupt_images`` for generated corruptions.

    Returns:
      ``CorruptedSplit`` with images uint8 [N, H, W, 3] and labels int32 [N], where example i is the corruption of
      example i of ``load_splits(dataset, ...).test`` (the same ``test_subset``).
    """
    if source not in SOURCE_CHOICES:
        raise ValueError(f"source must be one of {SOURCE_CHOICES}, got {source!r}")
    config = _data_config(dataset)
    corruption, severity = canonical_corruption(corruption), _check_severity(severity)
    corrupted_dir = os.fspath(corrupted_dir) if corrupted_dir is not None else None
    if source != "generated":
        found = _official(config, corruption, severity, corrupted_dir, required=source == "official")
        if found is not None:
            images, labels, origin = found
            images, labels = subset(images, labels, config.get("test_subset", 0), 0)
            return CorruptedSplit(images, labels, corruption, severity, "official", origin)
    return _generated(config, corruption, severity, seed, constants)


def _official_available(config: ml_collections.ConfigDict, corrupted_dir: str | None) -> list[str]:
    """Corruptions whose five severities the official set provides here."""
    if config.name == "cifar10":
        directory = _cifar10_c_dir(config, corrupted_dir)
        data_dir = config.get("data_dir", None)
        return [c for c in CIFAR10_C_CORRUPTIONS
                if (directory and os.path.isfile(os.path.join(directory, f"{c}.npy")))
                or all(_readable_stock(_stock_config(c, s), data_dir) is not None for s in SEVERITIES)]
    if config.name == "tiny_imagenet":
        manual_dir = _tiny_manual_dir(config, corrupted_dir)
        return [c for c in BENCHMARK_CORRUPTIONS if all(_tiny_c_present(config, c, s, manual_dir) for s in SEVERITIES)]
    return []


def available_corruptions(dataset: Any, source: str = "auto", *,
                          corrupted_dir: str | os.PathLike | None = None) -> tuple[str, ...]:
    """Corruption names ``corrupted_split`` can serve for ``dataset`` from ``source`` at every severity: the
    official ones present on disk, the generated ones (``selectivity_jax.data.corruptions.CORRUPTIONS``), or both
    for 'auto'; Hendrycks' order first."""
    if source not in SOURCE_CHOICES:
        raise ValueError(f"source must be one of {SOURCE_CHOICES}, got {source!r}")
    config = _data_config(dataset)
    corrupted_dir = os.fspath(corrupted_dir) if corrupted_dir is not None else None
    names = _official_available(config, corrupted_dir) if source != "generated" else []
    if source != "official":
        try:
            names += [canonical_corruption(c) for c in _corruptions_module().CORRUPTIONS]
        except ImportError:
            if source == "generated":
                raise
    rank = {name: i for i, name in enumerate(CIFAR10_C_CORRUPTIONS)}
    unique = dict.fromkeys(names)
    return tuple(sorted(unique, key=lambda name: (rank.get(name, len(rank)), list(unique).index(name))))


# ----------------------------------------------------------------------------- what the analyses of corruptions share

def check_corruptions(names: Sequence[str], severities: Sequence[int], source: str, where: str) -> None:
    """ValueError (one line, starting with ``where``) for unknown or repeated corruption names, severities outside
    1..5 or an unknown source: the settings check of every analysis that reads corrupted sets."""
    known = set(CIFAR10_C_CORRUPTIONS) | set(_corruptions_module().CORRUPTIONS)
    unknown = [n for n in names if canonical_corruption(n) not in known]
    if unknown:
        raise ValueError(f"{where}: unknown corruptions {unknown}; known: {', '.join(sorted(known))}")
    canonical = [canonical_corruption(n) for n in names]
    repeated = sorted({n for n in canonical if canonical.count(n) > 1})
    if repeated:
        raise ValueError(f"{where}: corruptions named more than once (TFDS names count as aliases): {repeated}")
    bad = [s for s in severities if s not in SEVERITIES]
    if bad:
        raise ValueError(f"{where}: severities must be among {SEVERITIES}; got {bad}")
    if source not in SOURCE_CHOICES:
        raise ValueError(f"{where}: source must be one of {SOURCE_CHOICES}; got {source!r}")


def corrupted_subset(dataset: Any, corruption: str, severity: int, *, source: str, test_labels: np.ndarray,
                     num_examples: int, seed: int) -> tuple[np.ndarray, np.ndarray, CorruptedSplit]:
    """(images uint8 [n, H, W, 3], labels [n], the whole split) of one corruption, restricted to the examples that
    ``subset(test images, test_labels, num_examples, seed)`` picks from the clean test split.

    `corrupted_split` aligns example i with clean test example i (checked against ``test_labels`` [N], the clean
    split's labels); `subset` picks examples from the labels alone, so the same ``num_examples`` and ``seed`` pick
    the corruptions of the clean subset's examples."""
    split = corrupted_split(dataset, corruption, severity, source=source)
    if not np.array_equal(split.labels, test_labels):
        raise ValueError(f"{corruption} (severity {severity}, {split.source}: {split.origin}) is not aligned with the "
                         "run's test split: its labels differ")
    images, labels = subset(split.images, split.labels, num_examples, seed)
    return images, labels, split


def sources_note(sources: Mapping[str, str]) -> str:
    """One sentence naming where the corrupted images came from (official sets vs our generator), from {corruption:
    `CorruptedSplit.source`}."""
    by_source: dict[str, list[str]] = {}
    for name, source in sources.items():
        by_source.setdefault(source, []).append(name)
    parts = [f"{source} ({', '.join(names)})" if len(by_source) > 1 else source
             for source, names in sorted(by_source.items())]
    generated = " Generated = made by selectivity_jax.data.corruptions, not the released benchmark." \
        if any("generated" in s for s in by_source) else ""
    return f"Corrupted images: {'; '.join(parts)}.{generated}"
