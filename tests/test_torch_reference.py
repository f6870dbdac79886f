"""The PyTorch reference of the benchmarks: the same network as the project's ResNet20 and the same selectivity
index as the float64 NumPy reference (skipped where torch is not installed; torch is not a dependency)."""

import numpy as np
import pytest

from numpy_reference import reference_unit_selectivity
from selectivity_jax.bench import torch_reference
from selectivity_jax.models import count_params, get_model, init_variables

torch = pytest.importorskip("torch")


def test_class_selectivity_equals_the_numpy_reference():
    rng = np.random.default_rng(0)
    acts = np.maximum(rng.normal(size=(40, 6, 4, 4)), 0).astype(np.float32)
    acts[:, 2] = 0.0                                   # a dead unit: index 0
    labels = rng.integers(0, 5, 40)                    # classes 5..9 absent: means over present classes only
    ours = torch_reference.class_selectivity(torch.from_numpy(acts), torch.from_numpy(labels), 10)
    expected = reference_unit_selectivity(acts.mean(axis=(2, 3)), labels, 10).mean()
    np.testing.assert_allclose(float(ours), expected, rtol=1e-5)


def test_resnet20_matches_the_project_model():
    model = torch_reference.resnet20()
    ours = init_variables(get_model("resnet20", num_classes=10), 0, (1, 32, 32, 3))
    assert sum(p.numel() for p in model.parameters()) == count_params(ours["params"]) == 269_722
    assert len(model.blocks) == len(get_model("resnet20", num_classes=10).selectivity_layer_names()) == 9
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_timing_runs_and_refuses_an_unknown_mode():
    timing = torch_reference.time_train_step(batch_size=8, width=4, warmup_steps=1, timed_steps=2)
    assert timing.images_per_second > 0 and timing.device == "cpu" and timing.selectivity_term
    with pytest.raises(ValueError, match="mode"):
        torch_reference.time_train_step(mode="jit")
