"""The README's Python examples run as written (in order, in one namespace) and give sensible numbers."""

import importlib
import pathlib
import re

import json

import numpy as np
import pytest


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


def _anchor(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_and_docs_links_resolve():
    """Every relative link of README.md and docs/*.md names a file that exists (and a heading there, after a #);
    no machine paths."""
    pages = [README, *sorted((README.parent / "docs").glob("*.md"))]
    assert len(pages) > 1
    for page in pages:
        text = page.read_text()
        assert not re.search(r"(?<![\w.~])/(work|tmp|home)/", text), page
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            assert linked.exists(), f"{page.name}: {target}"
            if anchor:
                headings = re.findall(r"^#+ (.*)$", linked.read_text(), flags=re.M)
                assert anchor in {_anchor(h) for h in headings}, f"{page.name}: {target}"


def test_readme_is_a_front_door():
    """At most 300 lines (issue 28): results, speed tables and long explanations belong in docs/."""
    assert len(README.read_text().splitlines()) <= 300


QUICKSTART_RESULTS = README.parent / "runs" / "quickstart" / "results.json"


@pytest.mark.skipif(not QUICKSTART_RESULTS.exists(), reason="no runs/quickstart: the set-up command (CI runs it first) "
                                                           "writes it")
def test_readme_quickstart_figures_are_a_fresh_runs():
    """The test figures the README's set-up section prints are those of the quickstart run the set-up command just
    made (CI runs it before the tests); the README's line comes from the oneDNN convolutions."""
    from helpers import kernel_path
    results = json.loads(QUICKSTART_RESULTS.read_text())
    printed = re.search(r"alpha 0: test accuracy ([0-9.]+), test selectivity ([0-9.]+); results in "
                        r"runs/quickstart/results.json", README.read_text())
    assert printed, "the README no longer prints the quickstart's last line"
    if results["convolutions"] != "onednn" or kernel_path() != "onednn":
        pytest.skip("the README's figures are the oneDNN kernels'; this run used XLA's")
    assert (f"{results['test_accuracy']:.4f}", f"{results['test_selectivity']:.4f}") == printed.groups()
