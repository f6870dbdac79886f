"""The README's Python examples run as written (in order, in one namespace) and give sensible numbers."""

import importlib
import pathlib
import re

import numpy as np


importlib.import_module("configs.analysis")  # imported before the examples run in a temporary directory
README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # what the examples write stays out of the checkout
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    # the <= 10-line example: network selectivity of a model the project did not write
    assert list(namespace["acts"]) == ["relu1", "relu2"]
    assert 0.0 < float(namespace["selectivity_fn"](namespace["acts"], namespace["labels"], num_classes=10)) < 1.0
    assert np.isfinite(float(namespace["selectivity"]))
    assert float(namespace["stats"].counts.sum()) == 64
    np.testing.assert_allclose(
        float(namespace["stats"].mean()),
        float(namespace["selectivity_fn"](namespace["acts"], namespace["labels"], num_classes=10)), atol=1e-5)
    # a model trained elsewhere, analysed: its rotation curve and its report
    summary = namespace["results"]["rotation"].result.summary
    assert 0.0 <= summary.selectivity_t1 and 0.0 < summary.selectivity_t0 <= 1.0
    assert (tmp_path / "analysis_of_small_cnn" / "analysis" / "report.md").exists()
