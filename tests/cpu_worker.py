"""One side of tests/test_cpu.py, in a fresh process (XLA reads its flags once per process):

    python tests/cpu_worker.py CHOICE OUT.npz

applies ``selectivity_jax.cpu.use(CHOICE)`` before JAX starts, then saves a narrowed ResNet20's evaluation logits, the
gradients of its training loss (BatchNorm in training mode) and its parameters before and after three of the
project's train steps (selectivity term at alpha = 1), all from fixed seeds; also which kernels ran the
convolutions and how glibc served a large buffer.
"""

import ctypes
import sys

from selectivity_jax import cpu

cpu.use(sys.argv[1])

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from configs import quickstart  # noqa: E402
from selectivity_jax.bench.step_timing import random_train_data  # noqa: E402
from selectivity_jax.models import get_model  # noqa: E402
from selectivity_jax.parallel import make_data_mesh  # noqa: E402
from selectivity_jax.train.setup import setup_run  # noqa: E402

BATCH, STEPS = 32, 3


def flat(tree, prefix):
    return {f"{prefix}/{jax.tree_util.keystr(path)}": np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]


def mapped_bytes_while_a_large_buffer_lives() -> int:
    """How many more bytes glibc holds in separate mappings (mallinfo2's hblkhd) while a 256 MiB array lives: its
    size under glibc's defaults, 0 when the heap serves it; -1 without glibc's mallinfo2."""
    try:
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return -1
    mallinfo2.restype = MallInfo2
    before = mallinfo2().hblkhd
    buffer = np.ones(64 * 2 ** 20, np.float32)
    mapped = mallinfo2().hblkhd - before
    del buffer
    return int(mapped)


def main(choice: str, out: str) -> None:
    mapped_bytes = mapped_bytes_while_a_large_buffer_lives()  # first: no JAX thread allocates or frees meanwhile
    config = quickstart.get_config()
    config.batch_size, config.alpha, config.num_train_steps = BATCH, 1.0, STEPS
    config.augment.flip, config.augment.crop_padding = False, 0
    model = get_model("resnet20", num_classes=10, width=config.model.width)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.standard_normal((BATCH, 32, 32, 3)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 10, BATCH), jnp.int32)
    variables = model.init(jax.random.key(0), images[:2], train=False)

    def loss(params):
        logits, _ = model.apply({**variables, "params": params}, images, train=True, mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    logits, grads = jax.jit(lambda v: (model.apply(v, images, train=False), jax.grad(loss)(v["params"])))(variables)
    arrays = {"logits": np.asarray(logits), **flat(grads, "grads")}

    mesh = make_data_mesh(1)
    run = setup_run(config, num_classes=10, image_shape=(32, 32, 3), num_train=BATCH * STEPS,
                    mean=(0.5,) * 3, std=(0.25,) * 3, mesh=mesh)
    data = random_train_data(config, BATCH * STEPS, mesh)
    state = run.initial_state
    arrays.update(flat(state.params, "initial"))
    order = run.permutation(state, 0)
    for _ in range(STEPS):
        state, _ = run.train_step(state, data, order)
    arrays.update(flat(state.params, "trained"))
    np.savez(out, in_force=np.asarray(cpu.in_force()), kernels=np.asarray(cpu.convolution_kernels()),
             mapped_bytes=np.asarray(mapped_bytes), **arrays)


if __name__ == "__main__":
    main(*sys.argv[1:])
