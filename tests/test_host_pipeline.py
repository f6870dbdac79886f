"""Host input pipeline (Grain): batches, per-epoch order, resume, multi-host shards, decoding, device placement and
training on host batches like the on-device path."""

import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from selectivity_jax.data.host_pipeline import (ArraySource, _from_process_local, decode_example, epoch_order,
                                                host_batches, process_shard, to_global_batch)
from selectivity_jax.data.on_device import put_train_arrays
from selectivity_jax.parallel import batch_sharded, make_data_mesh
from selectivity_jax.train.loop import setup_run
from test_train import tiny_config

NUM = 50


def _array_source(num=NUM):
    """Tiny 4 x 4 RGB images whose pixels all hold the example's index; label = index % 10."""
    images = np.broadcast_to(np.arange(num, dtype=np.uint8)[:, None, None, None], (num, 4, 4, 3)).copy()
    return ArraySource(images, np.arange(num) % 10)


def _png(image):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _ids(batches):
    """The example indices of a list of batches, one row per batch."""
    return np.stack([images[:, 0, 0, 0] for images, _ in batches]).astype(int)


def _batches(source=None, **kwargs):
    kwargs = {"batch_size": 8, "seed": 0, "epoch": 0, **kwargs}
    return list(host_batches(_array_source() if source is None else source, **kwargs))


def test_shapes_dtypes_and_remainder_dropped():
    batches = _batches()
    assert len(batches) == NUM // 8 == 6
    for images, labels in batches:
        assert images.shape == (8, 4, 4, 3) and images.dtype == np.uint8
        assert labels.shape == (8,) and labels.dtype == np.int32
        np.testing.assert_array_equal(labels, images[:, 0, 0, 0] % 10)


def test_every_example_at_most_once_in_the_epoch_order():
    for epoch in (0, 3):
        ids = _ids(_batches(epoch=epoch, seed=5)).ravel()
        assert len(set(ids)) == 48 and set(ids) <= set(range(NUM))
        order = epoch_order(NUM, seed=5, epoch=epoch)
        np.testing.assert_array_equal(np.sort(order), np.arange(NUM))
        np.testing.assert_array_equal(ids, order[:48])


def test_order_is_a_function_of_seed_and_epoch():
    ids = {(seed, epoch): _ids(_batches(seed=seed, epoch=epoch)) for seed, epoch in [(0, 0), (0, 1), (1, 0)]}
    np.testing.assert_array_equal(_ids(_batches(seed=0, epoch=1)), ids[0, 1])
    assert not np.array_equal(ids[0, 0], ids[0, 1]) and not np.array_equal(ids[0, 0], ids[1, 0])
    assert not np.array_equal(ids[0, 1], ids[1, 0])  # grain's bare seed + epoch would make these equal
    two_epochs = _ids(_batches(seed=0, epoch=0, num_epochs=2))
    np.testing.assert_array_equal(two_epochs, np.concatenate([ids[0, 0], ids[0, 1]]))


@pytest.mark.parametrize("start_batch", [0, 1, 4, 6])
def test_resume_at_start_batch_gives_the_tail(start_batch):
    full = _ids(_batches(seed=3, epoch=2, num_epochs=2))
    resumed = _batches(seed=3, epoch=2, num_epochs=2, start_batch=start_batch)
    assert len(resumed) == 12 - start_batch
    np.testing.assert_array_equal(_ids(resumed), full[start_batch:])


@pytest.mark.parametrize("shard_count", [2, 4])
def test_shards_concatenate_to_the_global_batch(shard_count):
    kwargs = {"seed": 1, "epoch": 1, "num_epochs": 2, "start_batch": 2}
    whole = _batches(**kwargs)
    shards = [_batches(shard_index=k, shard_count=shard_count, **kwargs) for k in range(shard_count)]
    assert all(len(shard) == len(whole) == 10 for shard in shards)
    for i, (images, labels) in enumerate(whole):
        assert shards[0][i][0].shape == (8 // shard_count, 4, 4, 3)
        np.testing.assert_array_equal(np.concatenate([shard[i][0] for shard in shards]), images)
        np.testing.assert_array_equal(np.concatenate([shard[i][1] for shard in shards]), labels)


def test_reading_in_the_caller_thread_gives_the_same_batches():
    np.testing.assert_array_equal(_ids(_batches(read_threads=0)), _ids(_batches()))


def test_worker_processes_give_the_same_batches():
    """Two spawned worker processes (a few seconds: each imports JAX) read the same batches, in order."""
    kwargs = {"seed": 2, "epoch": 0, "num_epochs": 2, "start_batch": 1}
    with_workers = _batches(worker_count=2, **kwargs)
    assert type(with_workers[0][0]) is np.ndarray  # copied out of Grain's shared memory
    np.testing.assert_array_equal(_ids(with_workers), _ids(_batches(**kwargs)))


def test_tfds_style_dict_source_with_png_bytes():
    arrays = _array_source()
    records = [{"image": _png(image), "label": np.int64(label)} for image, label in zip(arrays.images, arrays.labels)]
    from_png = _batches(records, seed=4, epoch=1)
    from_arrays = _batches(arrays, seed=4, epoch=1)
    assert len(from_png) == 6
    for (images, labels), (expected_images, expected_labels) in zip(from_png, from_arrays):
        assert images.dtype == np.uint8 and labels.dtype == np.int32
        np.testing.assert_array_equal(images, expected_images)
        np.testing.assert_array_equal(labels, expected_labels)


def test_decode_grayscale_jpeg_and_arrays():
    gray = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))
    image, label = decode_example({"image": _png(gray), "label": np.array(3)})
    assert image.shape == (16, 16, 1) and label == 3 and label.dtype == np.int32
    np.testing.assert_array_equal(image[..., 0], gray)
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 6, 3), np.uint8)).save(buffer, format="JPEG")
    image, _ = decode_example((buffer.getvalue(), 1))
    assert image.shape == (8, 6, 3) and image.dtype == np.uint8
    image, _ = decode_example((gray, 1))
    assert image.shape == (16, 16, 1)
    with pytest.raises(ValueError, match="uint8 image"):
        decode_example((gray.astype(np.float32), 1))


@pytest.mark.parametrize("kwargs,message", [
    ({"batch_size": 51}, "larger than the 50 examples"),
    ({"batch_size": 8, "shard_count": 3}, "multiple of shard_count=3"),
    ({"shard_index": 2, "shard_count": 2}, "shard_index=2"),
    ({"start_batch": 7}, "start_batch <= 6"),
    ({"num_epochs": 0}, "num_epochs > 0"),
])
def test_bad_arguments_fail_at_the_call(kwargs, message):
    with pytest.raises(ValueError, match=message):
        host_batches(_array_source(), **{"batch_size": 8, "seed": 0, "epoch": 0, **kwargs})


def test_to_global_batch_shards_over_the_data_axis():
    mesh = make_data_mesh(8)
    images, labels = _batches()[0]
    assert process_shard(mesh) == (0, 1)
    for x, y in [to_global_batch(images, labels, mesh), _from_process_local(images, labels, mesh)]:
        assert x.sharding == y.sharding == batch_sharded(mesh)
        assert x.addressable_shards[0].data.shape == (1, 4, 4, 3)
        np.testing.assert_array_equal(np.asarray(x), images)
        np.testing.assert_array_equal(np.asarray(y), labels)


def test_host_batches_train_like_the_on_device_path():
    """Three steps of `make_batch_train_step` on host batches equal three on-device steps over `epoch_order`."""
    config = tiny_config(batch_size=24, lr_base_batch_size=24, eval_batch_size=24)
    num, shape, seed = 72, (16, 16, 3), 7
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (num,) + shape, dtype=np.uint8)
    labels = rng.integers(0, 10, num).astype(np.int32)
    mesh = make_data_mesh(1)
    run = setup_run(config, num_classes=10, image_shape=shape, num_train=num, mean=(0.5,) * 3, std=(0.25,) * 3,
                    mesh=mesh)
    batch_step = run.batch_train_step
    data = put_train_arrays(images, labels, mesh)
    order = jnp.asarray(epoch_order(num, seed, epoch=0), jnp.int32)
    host_state = jax.tree.map(jnp.copy, run.initial_state)  # both steps donate their state
    device_state = run.initial_state
    batches = list(host_batches(ArraySource(images, labels), batch_size=config.batch_size, seed=seed, epoch=0))
    assert len(batches) == run.steps_per_epoch == 3
    for batch in batches:
        host_state, host_metrics = batch_step(host_state, *to_global_batch(*batch, mesh))
        device_state, device_metrics = run.train_step(device_state, data, order)
        for key in ("loss", "cross_entropy", "selectivity", "accuracy", "learning_rate"):
            np.testing.assert_allclose(np.asarray(host_metrics[key]), np.asarray(device_metrics[key][0]), rtol=1e-6,
                                       err_msg=key)
    for x, y in zip(jax.tree.leaves((host_state.params, host_state.batch_stats)),
                    jax.tree.leaves((device_state.params, device_state.batch_stats))):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
