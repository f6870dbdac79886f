"""The Colab notebooks: they run top to bottom in short mode, are committed without outputs, and each .ipynb holds
the same cells as its jupytext py:percent twin.

The notebooks run in a Jupyter kernel of this interpreter (`sys.executable`), through a kernel spec written to a
temporary directory, so no installed or user kernel spec named 'python3' can point them at another Python. The
kernel inherits this process's environment: ``SELECTIVITY_JAX_SHORT=1`` (set here) and conftest's 8 host CPU
devices (the short configs use one device).
"""

import json
import os
import sys

import pytest

from selectivity_jax.report.figures import FIGURE_CAPTIONS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK_DIR = os.path.join(ROOT, "notebooks")
NOTEBOOKS = ["quickstart", "reproduce_figures"]
KERNEL_NAME = "selectivity-jax-test"


def notebook_path(name: str, ext: str) -> str:
    return os.path.join(NOTEBOOK_DIR, f"{name}.{ext}")


def read_ipynb(name: str) -> dict:
    with open(notebook_path(name, "ipynb"), encoding="utf-8") as f:
        return json.load(f)


def cell_source(cell: dict) -> str:
    source = cell["source"]
    return "".join(source) if isinstance(source, list) else source


def execute(name: str, kernel_dir: str, env: dict[str, str]):
    """Runs notebook ``name`` in a fresh kernel of this interpreter, cwd notebooks/; returns the executed notebook
    (nbclient raises CellExecutionError, with the cell's traceback, when a cell fails)."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec_dir = os.path.join(kernel_dir, KERNEL_NAME)
    os.makedirs(spec_dir, exist_ok=True)
    with open(os.path.join(spec_dir, "kernel.json"), "w") as f:
        json.dump({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                   "display_name": "selectivity_jax tests", "language": "python"}, f)
    kernel_manager = KernelManager(kernel_name=KERNEL_NAME,
                                   kernel_spec_manager=KernelSpecManager(kernel_dirs=[kernel_dir]))
    notebook = nbformat.read(notebook_path(name, "ipynb"), as_version=4)
    client = nbclient.NotebookClient(notebook, km=kernel_manager, timeout=600, startup_timeout=120,
                                     resources={"metadata": {"path": NOTEBOOK_DIR}})
    client.execute(env=env)
    return notebook


def outputs_text(notebook) -> str:
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(output.get("data", {}).get("text/plain", ""))
            parts.append(output.get("data", {}).get("text/markdown", ""))
    return "\n".join(parts)


def image_count(notebook) -> int:
    return sum("image/png" in output.get("data", {}) for cell in notebook.cells for output in cell.get("outputs", []))


@pytest.fixture
def kernel_env():
    """The kernel's environment: this process's, in short mode, without the notebooks' directory variables."""
    env = dict(os.environ, SELECTIVITY_JAX_SHORT="1")
    for variable in ("SWEEP_DIR", "WORKDIR", "MPLBACKEND"):
        env.pop(variable, None)
    return env


def test_quickstart_runs_in_short_mode(tmp_path, kernel_env):
    notebook = execute("quickstart", str(tmp_path / "kernels"), kernel_env)
    text = outputs_text(notebook)
    assert "network selectivity:" in text
    assert "short mode: True; 1 device(s)" in text
    for alpha in ("-5", "+0", "+5"):
        assert f"alpha {alpha}: test accuracy" in text
    assert image_count(notebook) == 1  # the accuracy and selectivity vs alpha plot


def test_reproduce_figures_runs_in_short_mode_then_draws_an_existing_sweep(tmp_path, kernel_env):
    sweep_dir = tmp_path / "sweep"
    kernel_env["SWEEP_DIR"] = str(sweep_dir)  # absent: the notebook trains the short sweep into it
    notebook = execute("reproduce_figures", str(tmp_path / "kernels"), kernel_env)
    text = outputs_text(notebook)
    assert "short mode: True" in text
    assert sorted(n for n in os.listdir(sweep_dir) if not n.startswith(".")) == [
        "alpha_-5_seed_0", "alpha_0_seed_0", "alpha_5_seed_0", "sweep.json"]
    assert image_count(notebook) == len(FIGURE_CAPTIONS)
    assert "None: every planned run finished." in text  # the tables cell

    notebook = execute("reproduce_figures", str(tmp_path / "kernels"), kernel_env)  # now it only draws
    text = outputs_text(notebook)
    assert f"drawing the runs already in {sweep_dir}" in text and "short mode" not in text
    assert image_count(notebook) == len(FIGURE_CAPTIONS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_without_outputs(name):
    notebook = read_ipynb(name)
    code_cells = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert code_cells
    for cell in code_cells:
        assert cell["outputs"] == [] and cell["execution_count"] is None, cell_source(cell)[:80]
    assert notebook["metadata"]["jupytext"]["formats"] == "ipynb,py:percent"
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_matches_its_py_percent_twin(name):
    jupytext = pytest.importorskip("jupytext")
    with open(notebook_path(name, "py"), encoding="utf-8") as f:
        twin = jupytext.reads(f.read(), fmt="py:percent")
    cells = [(cell["cell_type"], cell_source(cell)) for cell in read_ipynb(name)["cells"]]
    assert cells == [(cell.cell_type, cell.source) for cell in twin.cells]
    assert twin.metadata["jupytext"]["formats"] == "ipynb,py:percent"
