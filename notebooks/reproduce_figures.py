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
# # selectivity_jax: the figures of a class-selectivity sweep
#
# To run it in Colab, open this file there (File > Open notebook > GitHub, or Upload) and set `REPO_URL` in
# the first code cell; run from a checkout, it needs nothing set.
#
# Leavitt & Morcos (ICLR 2021) train many models per alpha, with the loss
# `cross_entropy - alpha * network_class_selectivity`, and compare test accuracy and class selectivity across
# alpha. This notebook trains such a sweep on the quickstart configuration (a ResNet20 narrowed to width 8, on a
# synthetic class-structured image set: no download; alphas -5, -1, 0, 1, 5 x seeds 0, 1 = 10 runs), or loads a
# sweep you already ran, and draws every figure of the project's report:
#
# - test accuracy vs alpha, and network selectivity vs alpha (mean ± std over seeds),
# - test accuracy vs network selectivity, one point per run coloured by alpha (the paper's scatter),
# - selectivity by layer, one line per alpha,
# - the distribution of unit selectivity per layer at the smallest, central and largest alpha,
#
# then the summary and per-layer tables. The 10 runs take about 4 minutes on 2 CPU cores and much less on a Colab
# TPU or GPU runtime. `SELECTIVITY_JAX_SHORT=1` trains a much smaller sweep instead (the project's tests run the
# notebook this way).

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
# ## The sweep
#
# Set `SWEEP_DIR` (here, or as an environment variable) to a sweep directory that already holds runs, e.g. one
# written by `python -m experiments.sweep --config configs/quickstart.py --workdir runs/qs_sweep`, to draw its
# figures without training; any config's sweep works. Otherwise the quickstart sweep is trained into `SWEEP_DIR`
# (a new temporary directory when unset). Finished runs are skipped and unfinished ones resume, so an
# interrupted sweep continues where it stopped when you run the cell again.
#
# On an accelerator the runs of one seed train together as one vmapped group (one jitted step for all alphas);
# on CPU, where a group trains no faster, one after another. On Colab TPU runtimes JAX sees the TPU
# cores directly (no setup call, no TensorFlow). `cpu.enable()` applies the CPU settings the project's commands use
# (oneDNN convolutions, heap, an XLA:CPU flag) before JAX starts; importing the library alone changes nothing.

# %%
import tempfile

from selectivity_jax import cpu

cpu.enable()  # first: before JAX computes anything

import jax  # noqa: E402

from selectivity_jax.configs import get_config
from selectivity_jax.parallel import dividing_device_count
from selectivity_jax.sweep import default_mode, run_sweep

SHORT = os.environ.get("SELECTIVITY_JAX_SHORT") == "1"
SWEEP_DIR = os.environ.get("SWEEP_DIR", "")  # a sweep directory to draw instead of training one
TRAIN = not (SWEEP_DIR and os.path.isdir(SWEEP_DIR) and os.listdir(SWEEP_DIR))
print("backend:", jax.default_backend(), "devices:", jax.devices())

if TRAIN:
    # alphas -5, -1, 0, 1, 5 x seeds 0, 1; short mode: the tiny variant, alphas -5, 0, 5 x seed 0
    config = get_config("quickstart:tiny" if SHORT else "quickstart")
    if config.num_devices == 0:  # all devices that split the batches evenly (e.g. 5 of a v2-8's 8 cores)
        config.num_devices = dividing_device_count(config.batch_size, config.eval_batch_size)
    MODE = default_mode(jax.devices()[0].platform)
    SWEEP_DIR = SWEEP_DIR or tempfile.mkdtemp(prefix="selectivity_jax_sweep_")
    print(f"short mode: {SHORT}; {config.num_devices} device(s); mode {MODE}; sweep in {SWEEP_DIR}")
    run_sweep(config, SWEEP_DIR, mode=MODE)
else:
    print(f"drawing the runs already in {SWEEP_DIR}")

# %% [markdown]
# ## Figures
#
# `load_sweep` reads every finished run of the directory (unfinished ones are listed as missing) and
# `make_figures` draws the report's figures as matplotlib figures (`%matplotlib inline` lets `display` show them).

# %%
# %matplotlib inline
from IPython.display import Markdown, display

from selectivity_jax.report import load_sweep, summarize
from selectivity_jax.report.figures import FIGURE_CAPTIONS, make_figures
from selectivity_jax.report.tables import grid_section, layer_table, missing_section, summary_table

sweep = load_sweep(SWEEP_DIR)
figures = make_figures(sweep)
for name, fig in figures.items():
    display(Markdown(f"### {FIGURE_CAPTIONS[name]}"))
    display(fig)

# %% [markdown]
# ## Tables
#
# Per alpha: the number of seeds, and the mean ± sample standard deviation over seeds of test accuracy and test
# network selectivity; then the mean selectivity of each layer, layers in forward order.

# %%
summaries = summarize(sweep)
display(Markdown("\n\n".join([
    "#### Grid", grid_section(sweep),
    "#### Summary", summary_table(summaries),
    "#### Per-layer selectivity", layer_table(summaries, sweep.layer_names),
    "#### Missing runs", missing_section(sweep),
])))

# %% [markdown]
# The same report as files (`report.md`, `report.csv`, `figures/*.png|svg`) comes from
# `python -m experiments.report --sweep SWEEP_DIR`, run from the repository root.
