"""Host-side input pipeline (Grain) for data sets that do not fit in device memory.

The path from a random-access source to the devices::

    source -> shuffle(per-epoch seed) -> decode -> batch(drop remainder) -> [worker processes] -> to_global_batch

Batches are uint8 images [B, H, W, C] and int32 labels [B]; augmentation and normalization happen on device inside
the step (`selectivity_jax.train.step.make_batch_train_step`), exactly as for data held on the devices.

Determinism: the example order of an epoch is a pure function of (seed, epoch) and of nothing else (not the number
of worker processes, threads or hosts), so a run resumed at batch ``start_batch`` of an epoch sees exactly the
batches an uninterrupted run would. Resuming slices Grain's indexable dataset; nothing is read and discarded.

Multi-host: with ``shard_count`` processes each global batch of ``batch_size`` examples is cut into ``shard_count``
consecutive blocks of ``batch_size // shard_count`` rows; process ``shard_index`` yields block ``shard_index``.
Concatenating the blocks of processes 0, 1, ..., shard_count - 1 gives the global batch of ``shard_count = 1``, row
for row. `to_global_batch` puts process ``k``'s block on the devices that hold rows ``[k * b, (k + 1) * b)`` of the
``'data'`` axis, so take ``(shard_index, shard_count)`` from `process_shard(mesh)`.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import grain
import jax
import numpy as np
from absl import flags
from jax.sharding import Mesh
from PIL import Image

from selectivity_jax.parallel import batch_sharded

Example = tuple[np.ndarray, np.int32]
Batch = tuple[np.ndarray, np.ndarray]


class RandomAccessSource(Protocol):
    """What `host_batches` reads: ``len(source)`` examples, ``source[i]`` a dict ``{'image', 'label'}`` (e.g.
    ``tfds.data_source(...)``) or a tuple ``(image, label)``; images as arrays or PNG/JPEG bytes."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


class ArraySource:
    """In-memory random-access source: example ``i`` is ``(images[i], labels[i])``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.images[index], self.labels[index]

    def __repr__(self) -> str:
        return f"ArraySource(images={self.images.shape} {self.images.dtype}, labels={self.labels.shape})"


def epoch_seed(seed: int, epoch: int) -> int:
    """The 32-bit Grain shuffle seed of ``epoch``; (seed, epoch) pairs are hashed, so no two pairs share an order
    by construction (Grain's own ``seed + epoch`` would give seed 0 epoch 1 the order of seed 1 epoch 0)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def epoch_order(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """int64 [N]: the source indices of ``epoch`` in the order `host_batches` reads them (batch ``i`` is
    ``order[i * B:(i + 1) * B]``); e.g. to feed the same batches to the on-device path."""
    return np.fromiter(grain.MapDataset.range(num_examples).shuffle(epoch_seed(seed, epoch)), np.int64, num_examples)


def decode_example(record: Any) -> Example:
    """A source record -> (uint8 image [H, W, C], int32 label); encoded images are decoded with Pillow."""
    image, label = (record["image"], record["label"]) if isinstance(record, dict) else record
    if isinstance(image, (bytes, bytearray, memoryview)):
        with Image.open(io.BytesIO(image)) as decoded:
            image = np.asarray(decoded if decoded.mode in ("L", "RGB") else decoded.convert("RGB"))
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"expected a uint8 image [H, W, C]; got {image.dtype} {image.shape}")
    return image, np.int32(label)


def stack_examples(examples: Sequence[Example]) -> Batch:
    """Examples -> (uint8 images [B, H, W, C], int32 labels [B])."""
    return np.stack([image for image, _ in examples]), np.array([label for _, label in examples], np.int32)


def host_batches(source: RandomAccessSource, *, batch_size: int, seed: int, epoch: int, num_epochs: int = 1,
                 start_batch: int = 0, worker_count: int = 0, shard_index: int = 0, shard_count: int = 1,
                 read_threads: int = 2) -> Iterator[Batch]:
    """Batches of epochs ``epoch, ..., epoch + num_epochs - 1``, starting at batch ``start_batch`` of the first.

    Each epoch has ``len(source) // batch_size`` batches (the remainder is dropped) and reads each example at most
    once, in the order `epoch_order` (seed >= 0). This process yields rows ``[shard_index * b, (shard_index + 1) * b)``
    of each global batch, ``b = batch_size // shard_count`` (see the module docstring). ``worker_count > 0`` decodes
    in that many worker processes (spawned; the source must pickle; the batches are the same as with 0), and
    ``read_threads`` threads per process read up to as many batches ahead (0: read in the caller's thread). All
    images must have one shape.

    Yields:
      (images uint8 [b, H, W, C], labels int32 [b]).
    """
    num_examples = len(source)
    if not 0 <= shard_index < shard_count or batch_size <= 0 or batch_size % shard_count:
        raise ValueError(f"batch_size={batch_size} must be a positive multiple of shard_count={shard_count}, "
                         f"and 0 <= shard_index={shard_index} < shard_count")
    batches_per_epoch = num_examples // batch_size
    if batches_per_epoch == 0:
        raise ValueError(f"batch_size={batch_size} is larger than the {num_examples} examples of the source")
    if num_epochs <= 0 or not 0 <= start_batch <= batches_per_epoch:
        raise ValueError(f"need num_epochs > 0 and 0 <= start_batch <= {batches_per_epoch}; got num_epochs="
                         f"{num_epochs}, start_batch={start_batch}")
    rows = batch_size // shard_count
    epochs = []
    for e in range(epoch, epoch + num_epochs):
        blocks = (grain.MapDataset.source(source).shuffle(epoch_seed(seed, e)).map(decode_example)
                  .batch(rows, drop_remainder=True, batch_fn=stack_examples))
        # block j * shard_count + k of an epoch is rows [k * b, (k + 1) * b) of its global batch j
        epochs.append(blocks[:batches_per_epoch * shard_count][shard_index::shard_count])
    dataset = grain.MapDataset.concatenate(epochs)[start_batch:]
    read_options = grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=read_threads)
    iter_dataset = dataset.to_iter_dataset(read_options)
    if worker_count > 0:
        if not flags.FLAGS.is_parsed():  # grain 0.2.18 reads an absl flag here (google/grain#1355): use defaults
            flags.FLAGS.mark_as_parsed()
        iter_dataset = iter_dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return _iterate(iter_dataset, copy=worker_count > 0)


def _iterate(dataset: grain.IterDataset, copy: bool) -> Iterator[Batch]:
    iterator = iter(dataset)
    try:
        for images, labels in iterator:
            # workers hand over Grain SharedMemoryArrays; a copy frees the shared memory at once
            yield (np.array(images), np.array(labels)) if copy else (images, labels)
    finally:
        iterator.close()  # stops prefetch threads and worker processes when the consumer stops early


def process_shard(mesh: Mesh) -> tuple[int, int]:
    """(shard_index, shard_count) of this process for `host_batches` on ``mesh``: the position of this process's
    devices, a contiguous block of the ``'data'`` axis, among the blocks of all processes. (0, 1) on one process."""
    devices = list(mesh.devices.flat)
    mine = [i for i, device in enumerate(devices) if device.process_index == jax.process_index()]
    start, size = (mine[0], len(mine)) if mine else (0, 0)
    if not size or mine != list(range(start, start + size)) or start % size or len(devices) % size:
        raise ValueError("this process's devices do not form one equal, contiguous block of the mesh's 'data' axis")
    return start // size, len(devices) // size


def to_global_batch(images: np.ndarray, labels: np.ndarray, mesh: Mesh) -> tuple[jax.Array, jax.Array]:
    """A host batch as jax.Arrays sharded over the ``'data'`` axis of ``mesh``.

    One process: ``images``/``labels`` are the whole batch. Several processes: they are this process's rows of the
    global batch (its `host_batches` shard with `process_shard(mesh)`), and every process calls this together.
    """
    if jax.process_count() == 1:
        return jax.device_put((images, labels), batch_sharded(mesh))
    return _from_process_local(images, labels, mesh)


def _from_process_local(images: np.ndarray, labels: np.ndarray, mesh: Mesh) -> tuple[jax.Array, jax.Array]:
    _, shard_count = process_shard(mesh)
    sharding = batch_sharded(mesh)
    global_rows = images.shape[0] * shard_count
    return (jax.make_array_from_process_local_data(sharding, images, (global_rows,) + images.shape[1:]),
            jax.make_array_from_process_local_data(sharding, labels, (global_rows,)))
