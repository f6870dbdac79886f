"""One process of the multi-host test (tests/test_multihost.py): three training steps, results as JSON lines.

    python tests/multihost_worker.py PROCESS_ID NUM_PROCESSES PORT LOCAL_DEVICES OUT.npz
"""

import os
import sys

process_id, num_processes, port, local_devices, out = sys.argv[1:6]
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={local_devices}"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")
if int(num_processes) > 1:
    jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=int(num_processes),
                               process_id=int(process_id))

import numpy as np  # noqa: E402

from selectivity_jax.data import synthetic_images  # noqa: E402
from selectivity_jax.data.on_device import put_train_arrays  # noqa: E402
from selectivity_jax.parallel import make_data_mesh  # noqa: E402
from selectivity_jax.train.setup import setup_run  # noqa: E402
from test_train import tiny_config  # noqa: E402

config = tiny_config(num_devices=0, batch_size=40, alpha=-1.0, learning_rate=0.002)
mesh = make_data_mesh(0)
images, labels = synthetic_images(10, 24, seed=0)
run = setup_run(config, num_classes=10, image_shape=(32, 32, 3), num_train=240, mean=(0.5,) * 3, std=(0.25,) * 3,
                mesh=mesh)
data = put_train_arrays(images, labels, mesh)
state, losses = run.initial_state, []
order = run.permutation(state, 0)
for _ in range(3):
    state, metrics = run.train_step(state, data, order)
    losses.append(float(np.asarray(jax.device_get(metrics["loss"]))[0, 0]))  # [steps, models]
leaves = [np.asarray(jax.device_get(leaf)) for leaf in jax.tree.leaves((state.params, state.batch_stats))]
if jax.process_index() == 0:
    np.savez(out, losses=np.asarray(losses), devices=jax.device_count(), processes=jax.process_count(),
             **{f"leaf{i}": leaf for i, leaf in enumerate(leaves)})
