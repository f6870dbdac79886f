# ---
# jupyter:
#   accelerator: TPU
#   colab:
#     gpuType: V5E1
#     provenance: []
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: accelerator,colab
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # selectivity_jax quickstart: class selectivity in JAX/Flax
#
# To run it in Colab, open this file there (File > Open notebook > GitHub, or Upload) and set `REPO_URL` in
# the first code cell; run from a checkout, it needs nothing set.
#
# Leavitt & Morcos, "Selectivity considered harmful: evaluating the causal impact of class selectivity in DNNs"
# (ICLR 2021), train networks with the loss `cross_entropy - alpha * network_class_selectivity`: alpha < 0 pushes
# class selectivity down, alpha > 0 pushes it up. This notebook
#
# 1. installs `selectivity_jax` if it is not installed yet (from the checkout it runs in, else a clone),
# 2. shows the devices JAX sees (TPU, GPU or CPU),
# 3. measures the network class selectivity of a small Flax MLP with `selectivity_fn`,
# 4. trains the quickstart model (a ResNet20 narrowed to width 8, on a synthetic class-structured image set
#    generated in memory: no download) at alpha = -5, 0 and 5 with `run_sweep`,
# 5. plots test accuracy and test selectivity against alpha.
#
# It is meant for a Colab **TPU** runtime (Runtime > Change runtime type > TPU) and runs unchanged on GPU and CPU
# runtimes. Training the three models takes well under a minute on a TPU or GPU after compilation, about two
# minutes on 2 CPU cores. With the environment variable `SELECTIVITY_JAX_SHORT=1` it trains a much smaller
# configuration (the project's tests run the notebook this way).

# %% [markdown]
# ## Install
#
# From `notebooks/` of a checkout of the repository nothing needs setting: if `selectivity_jax` is not installed
# yet, this cell installs that checkout (`pip install -e ..`). Elsewhere (a Colab runtime) it clones the repository
# named by `REPO_URL` and installs it: put the project's git address in `REPO_URL` at the top of the cell, or in
# the environment variable `SELECTIVITY_JAX_REPO_URL`. In Colab it then installs the jax wheel that matches the
# accelerator (`jax[tpu]` on a TPU runtime, `jax[cuda12]` on a GPU runtime); if pip reports that it upgraded
# packages the runtime had already imported, restart the session (Runtime > Restart session) and continue with the
# next cell. The configs come with the package (`selectivity_jax.configs.get_config("quickstart")`).

# %%
import glob
import importlib.util
import os
import shutil
import subprocess
import sys

# The project's git address: needed only where selectivity_jax is neither installed nor checked out (Colab).
REPO_URL = os.environ.get("SELECTIVITY_JAX_REPO_URL", "")  # or write the address between the quotes
IN_COLAB = "google.colab" in sys.modules


def checkout_root(start):
    """The checkout at or above ``start`` (a folder holding setup.cfg and selectivity_jax/), or None."""
    path = os.path.abspath(start)
    while not (os.path.isfile(os.path.join(path, "setup.cfg"))
               and os.path.isdir(os.path.join(path, "selectivity_jax"))):
        if os.path.dirname(path) == path:
            return None
        path = os.path.dirname(path)
    return path


def install(repo_dir):
    """``pip install -e repo_dir``, importable by this kernel too; in Colab, the accelerator's jax wheel."""
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", repo_dir], check=True)
    sys.path.insert(0, repo_dir)  # new processes see the editable install; this running kernel reads the checkout
    if IN_COLAB and (importlib.util.find_spec("libtpu") or glob.glob("/dev/accel*")):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-U", "jax[tpu]"], check=True)
    elif IN_COLAB and shutil.which("nvidia-smi"):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-U", "jax[cuda12]"], check=True)


if importlib.util.find_spec("selectivity_jax") is None:
    REPO_DIR = checkout_root(os.getcwd())
    if REPO_DIR is None:
        if not REPO_URL:
            raise RuntimeError("selectivity_jax is not installed and this notebook is not in a checkout of it: set "
                               "REPO_URL at the top of this cell (or the environment variable "
                               "SELECTIVITY_JAX_REPO_URL) to the project's git address, or open the notebook from "
                               "notebooks/ of a checkout")
        REPO_DIR = os.path.abspath("selectivity_jax")  # in Colab: /content/selectivity_jax
        if not os.path.isdir(REPO_DIR):
            subprocess.run(["git", "clone", "--depth", "1", REPO_URL, REPO_DIR], check=True)
    install(REPO_DIR)
print("selectivity_jax:", os.path.dirname(importlib.util.find_spec("selectivity_jax").origin))

# %% [markdown]
# ## Devices
#
# Colab's TPU runtimes are TPU VMs: JAX sees the TPU cores directly as its devices, with no setup call (the old
# `jax.tools.colab_tpu.setup_tpu()` was for the retired TPU Node runtime) and no TensorFlow. Expect 1 to 8
# devices depending on the TPU type (v5e-1: 1, v2-8: 8). Training below shards each batch over the devices
# (data parallelism with global-batch selectivity); on a CPU runtime the backend is `cpu`. Importing
# `selectivity_jax` changes nothing in the process; `selectivity_jax.cpu.enable()` asks for the project's CPU
# settings, as its commands apply them (convolutions on oneDNN, a heap that keeps freed memory, an XLA:CPU flag; the
# last two act only before JAX starts, so call it first). On CPU the first model traced builds the oneDNN
# convolutions (a few seconds, once per machine); on a TPU or GPU runtime the settings leave the programs alone.

# %%
from selectivity_jax import cpu

cpu.enable()  # first: before JAX computes anything

import jax  # noqa: E402

print("backend:", jax.default_backend())
print("devices:", jax.devices())
print("CPU settings:", cpu.in_force(), "| CPU convolutions on:", cpu.convolution_kernels())

# %% [markdown]
# ## Network selectivity of a small Flax model
#
# `capture_activations` returns the post-ReLU activations of a linen model (every module named `ReLU`; plain
# `nn.relu(x)` calls are invisible to Flax and need `selectivity_jax.ReLU()(x)` or a `self.sow(...)` line), and
# `selectivity_fn` computes the paper's class selectivity index of every unit,
# `(mu_max - mu_rest) / (mu_max + mu_rest)`, averaged over units and layers. It is pure and differentiable, so it
# can go into a loss.

# %%
import flax.linen as nn
import numpy as np
import optax

from selectivity_jax import ReLU, capture_activations, selectivity_fn


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = ReLU(name="relu1")(nn.Dense(32)(x))
        x = ReLU(name="relu2")(nn.Dense(32)(x))
        return nn.Dense(10)(x)


x, labels = np.random.default_rng(0).random((64, 20), dtype=np.float32), np.arange(64) % 10
variables = MLP().init(jax.random.key(0), x)
acts = capture_activations(MLP().apply, variables, x)
print({name: a.shape for name, a in acts.items()})
print("network selectivity:", float(selectivity_fn(acts, labels, num_classes=10)))


def selectivity_of(variables):
    return selectivity_fn(capture_activations(MLP().apply, variables, x), labels, num_classes=10)


grads = jax.grad(selectivity_of)(variables)  # what a selectivity regularizer backpropagates
print("gradient norm:", float(optax.global_norm(grads)))

# %% [markdown]
# ## Train at three alphas
#
# `run_sweep` trains every alpha of `config.sweep.alphas` for every seed of `config.sweep.seeds`, one
# sub-directory per run (`alpha_-5_seed_0/`, ...; each holds `results.json`, `metrics.jsonl`, `selectivity.npz`
# and checkpoints). On an accelerator the three runs train together as one vmapped group (one jitted step for all
# three models); on CPU, where a group trains no faster, one after another.
#
# Runs go into a new temporary directory unless the environment variable `WORKDIR` names one (an existing sweep
# directory of the same config resumes and skips finished runs). `SELECTIVITY_JAX_SHORT=1` shrinks the
# configuration to a few seconds of training: its numbers mean nothing, it only checks that everything runs.

# %%
import tempfile

from selectivity_jax.configs import get_config
from selectivity_jax.parallel import dividing_device_count
from selectivity_jax.sweep import default_mode, run_sweep

SHORT = os.environ.get("SELECTIVITY_JAX_SHORT") == "1"

config = get_config("quickstart:tiny" if SHORT else "quickstart")
config.sweep.alphas = (-5.0, 0.0, 5.0)
config.sweep.seeds = (0,)
if config.num_devices == 0:  # all devices that split the batches evenly (e.g. 5 of a v2-8's 8 cores for batch 100)
    config.num_devices = dividing_device_count(config.batch_size, config.eval_batch_size)
MODE = default_mode(jax.devices()[0].platform)
WORKDIR = os.environ.get("WORKDIR") or tempfile.mkdtemp(prefix="selectivity_jax_quickstart_")
print(f"short mode: {SHORT}; {config.num_devices} device(s); mode {MODE}; runs in {WORKDIR}")

results = run_sweep(config, WORKDIR, mode=MODE)

# %% [markdown]
# ## Accuracy and selectivity against alpha
#
# Alpha moves selectivity the way the paper's regularizer does: down for alpha < 0, up for alpha > 0. Raising it
# costs accuracy; lowering it costs little on this short schedule. In the project's run of this configuration on
# one CPU device (docs/results.md, "Quickstart, single runs"), alpha = -5, 0, 5 gave test accuracy 0.873,
# 0.965, 0.640 and test selectivity 0.103, 0.488, 0.920; another device count or accelerator gives somewhat
# different numbers (one seed of a 6-epoch run is noisy, at alpha = -5 especially), the same ordering of
# selectivity. For means and standard deviations over seeds and the paper's figures, see `reproduce_figures.ipynb`.

# %%
import matplotlib.pyplot as plt

alphas = [r.alpha for r in results]
accuracy = [r.test_accuracy for r in results]
selectivity = [r.test_selectivity for r in results]
for a, acc, sel in zip(alphas, accuracy, selectivity):
    print(f"alpha {a:+g}: test accuracy {acc:.3f}, test selectivity {sel:.3f}")

fig, (ax_acc, ax_sel) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
ax_acc.plot(alphas, accuracy, "o-")
ax_acc.set(xlabel="alpha", ylabel="test accuracy", title="Test accuracy vs alpha")
ax_sel.plot(alphas, selectivity, "o-", color="C3")
ax_sel.set(xlabel="alpha", ylabel="test network selectivity", title="Class selectivity vs alpha")
for ax in (ax_acc, ax_sel):
    ax.axvline(0.0, color="0.7", linestyle=":")
    ax.grid(alpha=0.3)
plt.show()
