"""Data sets held on the devices: per-epoch permutation, batch gather and augmentation, all inside jit.

Small data sets (CIFAR10, Tiny ImageNet) are placed on the mesh once as uint8 arrays; each training step gathers
its batch by permutation index, augments it (random crop from zero padding + horizontal flip) and normalizes it on
device, so the hot loop has no host pipeline. Evaluation splits are padded to whole batches with a mask.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from selectivity_jax.parallel import DATA_AXIS, replicated

Array = jax.Array


@flax.struct.dataclass
class TrainArrays:
    """A training split on device, replicated on every device: images uint8 [N, H, W, C], labels int32 [N]."""
    images: Array
    labels: Array

    @property
    def num_examples(self) -> int:
        return self.labels.shape[0]


@flax.struct.dataclass
class EvalArrays:
    """An evaluation split cut into whole batches, batch axis sharded: images [NB, B, H, W, C], labels and mask
    [NB, B] (mask 0 marks the padding rows of the last batch)."""
    images: Array
    labels: Array
    mask: Array


def put_train_arrays(images: np.ndarray, labels: np.ndarray, mesh: Mesh) -> TrainArrays:
    """Places a training split on every device of ``mesh`` (replicated; the step gathers a sharded batch)."""
    if images.dtype != np.uint8 or images.ndim != 4 or labels.shape != images.shape[:1]:
        raise ValueError(f"expected uint8 images [N, H, W, C] and labels [N]; got {images.dtype} {images.shape} "
                         f"and {labels.shape}")
    return TrainArrays(*jax.device_put((images, labels.astype(np.int32)), replicated(mesh)))


def put_eval_arrays(images: np.ndarray, labels: np.ndarray, batch_size: int, mesh: Mesh) -> EvalArrays:
    """Pads a split to whole batches of ``batch_size`` and shards each batch over the ``'data'`` axis."""
    n = len(labels)
    num_batches = max(1, -(-n // batch_size))
    pad = num_batches * batch_size - n
    mask = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    images = np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)])
    labels = np.concatenate([labels.astype(np.int32), np.zeros(pad, np.int32)])
    shape = (num_batches, batch_size)
    sharding = NamedSharding(mesh, P(None, DATA_AXIS))
    return EvalArrays(*jax.device_put((images.reshape(shape + images.shape[1:]), labels.reshape(shape),
                                       mask.reshape(shape)), sharding))


def epoch_permutation(key: Array, epoch: Array | int, num_examples: int) -> Array:
    """int32 [N]: the example order of ``epoch``, a pure function of (key, epoch)."""
    return jax.random.permutation(jax.random.fold_in(key, epoch), num_examples).astype(jnp.int32)


def gather_batch(data: TrainArrays, permutation: Array, step_in_epoch: Array, batch_size: int) -> tuple[Array, Array]:
    """Batch ``step_in_epoch`` of an epoch: (images uint8 [B, H, W, C], labels [B])."""
    indices = jax.lax.dynamic_slice_in_dim(permutation, step_in_epoch * batch_size, batch_size)
    return jnp.take(data.images, indices, axis=0), jnp.take(data.labels, indices, axis=0)


def random_crop_flip(key: Array, images: Array, padding: int = 4, flip: bool = True) -> Array:
    """Random crop of the original size from the zero-padded image, then a random horizontal flip (p = 0.5).

    [B, H, W, C] -> [B, H, W, C], same dtype; ``padding = 0`` skips the crop.
    """
    batch, height, width, _ = images.shape
    crop_key, flip_key = jax.random.split(key)
    if padding > 0:
        padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
        offsets = jax.random.randint(crop_key, (batch, 2), 0, 2 * padding + 1)
        crop = lambda image, offset: jax.lax.dynamic_slice(
            image, (offset[0], offset[1], 0), (height, width, image.shape[-1]))
        images = jax.vmap(crop)(padded, offsets)
    if flip:
        flips = jax.random.bernoulli(flip_key, 0.5, (batch,))
        images = jnp.where(flips[:, None, None, None], images[:, :, ::-1, :], images)
    return images


def normalize(images: Array, mean: Array, std: Array, dtype=jnp.float32) -> Array:
    """uint8 [B, H, W, C] -> (x / 255 - mean) / std in ``dtype``; mean and std per channel, in [0, 1] units."""
    x = images.astype(jnp.float32) / 255.0
    return ((x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)).astype(dtype)


def channel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of uint8 images [N, H, W, C] in [0, 1] units (float64 accumulation, chunked)."""
    total = np.zeros(images.shape[-1])
    total_sq = np.zeros(images.shape[-1])
    for start in range(0, len(images), chunk):
        x = images[start:start + chunk].astype(np.float64) / 255.0
        total += x.sum(axis=(0, 1, 2))
        total_sq += (x ** 2).sum(axis=(0, 1, 2))
    count = images.shape[0] * images.shape[1] * images.shape[2]
    mean = total / count
    return mean.astype(np.float32), np.sqrt(np.maximum(total_sq / count - mean ** 2, 1e-12)).astype(np.float32)


def is_unset(value: Any) -> bool:
    """Whether a ``data.mean`` / ``data.std`` value means "compute from the training images": None, or ``(None,)``
    (what ``--config.data.mean=None`` gives a tuple field)."""
    return value is None or (isinstance(value, (list, tuple)) and all(v is None for v in value))


def normalization_stats(data_config, train_images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The per-channel (mean, std) a run normalizes with: ``data_config.mean``/``std`` when set, else computed from
    the training images (`channel_stats`)."""
    if not is_unset(data_config.get("mean")):
        return tuple(data_config.mean), tuple(data_config.std)
    mean, std = channel_stats(train_images)
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)
