"""Unit ablation: masks, orders, accuracy under ablation against direct evaluation, correlations."""

import numpy as np
import pytest

from selectivity_jax.measures.ablation import (ablate_units, ablation_counts, ablation_orders, accuracy_under_masks,
                                               area_under_curve, cumulative_masks, layer_ablation,
                                               selectivity_drop_correlation, unit_fill)
from selectivity_jax.trained import batched, load_test_split, restore_run

LAYER = "stage3_block2/out"


@pytest.fixture(scope="module")
def run(tiny_sweep):
    return restore_run(str(tiny_sweep / "alpha_0_seed_0"))


def test_masks_and_orders():
    selectivity = np.array([0.3, 0.9, 0.1, 0.9])
    orders = ablation_orders(selectivity, seed=0)
    assert orders["decreasing"].tolist() == [1, 3, 0, 2] and orders["increasing"].tolist() == [2, 0, 1, 3]
    assert sorted(orders["random"].tolist()) == [0, 1, 2, 3]
    masks = cumulative_masks(orders["decreasing"], [0, 1, 4])
    np.testing.assert_array_equal(masks, [[1, 1, 1, 1], [1, 0, 1, 1], [0, 0, 0, 0]])
    assert ablation_counts(64, 11) == [0, 6, 13, 19, 26, 32, 38, 45, 51, 58, 64]
    activation = np.ones((2, 3, 3, 4), np.float32)
    out = np.asarray(ablate_units(activation, masks[1], np.array([5.0, 6.0, 7.0, 8.0])))
    assert (out[..., 1] == 6.0).all() and (out[..., [0, 2, 3]] == 1.0).all()
    np.testing.assert_allclose(unit_fill(np.array([[1.0, 2.0], [3.0, 6.0]]), "mean"), [2.0, 4.0])
    with pytest.raises(ValueError, match="fill"):
        unit_fill(np.ones((2, 2)), "median")


def test_accuracy_under_masks_equals_direct_evaluation(run):
    images, labels = load_test_split(run.config)
    masks = np.ones((3, 16), np.float32)
    masks[1, [0, 5, 7]] = 0.0
    masks[2] = 0.0
    accuracy = accuracy_under_masks(run.logits_fn, LAYER, masks, images, labels, fill=np.zeros(16), batch_size=32,
                                    masks_per_call=2)
    assert accuracy[0] == pytest.approx(run.results.test_accuracy, abs=1e-9)
    keep = masks[1]
    direct = batched(lambda x: run.logits(x, edits={LAYER: lambda a: a * keep}), images, 32)
    assert accuracy[1] == pytest.approx(np.mean(direct.argmax(-1) == labels), abs=1e-9)
    # every unit of the last block ablated: the classifier sees zeros and always predicts argmax(bias)
    bias_class = int(np.argmax(run.variables["params"]["fc"]["bias"]))
    assert accuracy[2] == pytest.approx(np.mean(labels == bias_class), abs=1e-9)


def test_layer_ablation(run):
    images, labels = load_test_split(run.config)
    responses = batched(run.responses, images, 40)[LAYER]
    selectivity = np.linspace(0.0, 1.0, 16)
    result = layer_ablation(run.logits_fn, LAYER, selectivity, responses, images, labels, fill="mean", num_points=5,
                            batch_size=40)
    assert result["counts"] == [0, 4, 8, 12, 16] and len(result["single_unit_drop"]) == 16
    for order in ("decreasing", "increasing", "random"):
        assert result[f"accuracy_{order}"][0] == result["clean_accuracy"]
        assert result[f"accuracy_{order}"][-1] == result["accuracy_decreasing"][-1]  # all units: same mask
    single = accuracy_under_masks(run.logits_fn, LAYER, 1.0 - np.eye(16, dtype=np.float32), images, labels,
                                  fill=responses.mean(0), batch_size=40)
    np.testing.assert_allclose(result["single_unit_drop"], result["clean_accuracy"] - single, atol=1e-9)
    expected = selectivity_drop_correlation(selectivity, np.asarray(result["single_unit_drop"]))["spearman"]
    assert result["spearman"] == pytest.approx(expected, nan_ok=True)


def test_correlation_and_area():
    rho = selectivity_drop_correlation(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.0, 0.01, 0.05, 0.2]))
    assert rho["spearman"] == pytest.approx(1.0) and rho["pearson"] > 0.8
    assert np.isnan(selectivity_drop_correlation(np.ones(4), np.arange(4.0))["spearman"])
    assert area_under_curve([0, 5, 10], [1.0, 1.0, 0.0]) == pytest.approx(0.75)


def brute_force_accuracy(responses, weights, labels, ablated, fill):
    """Accuracy of the linear read-out ``responses [N, U] @ weights [U, C]`` with the units in ``ablated`` set to
    ``fill`` [U]: the answer `layer_ablation` must give for that set."""
    edited = np.array(responses, np.float64)
    edited[:, list(ablated)] = np.asarray(fill, np.float64)[list(ablated)]
    return float(np.mean(np.argmax(edited @ weights, -1) == labels))


@pytest.mark.parametrize("fill", ["zero", "mean"])
def test_each_order_ablates_its_own_units_in_its_own_order(fill):
    """A model whose answer is known by brute force: the "layer" is the input itself (8 units), read out linearly.
    Each order's curve is the accuracy after ablating the first k units by decreasing selectivity, by increasing
    selectivity and in the recorded random order, recomputed here in float64 from the selectivity alone."""
    rng = np.random.default_rng(4)
    units, examples = 8, 300
    responses = rng.random((examples, units)).astype(np.float32)
    weights = rng.normal(size=(units, 3)) * np.linspace(0.2, 3.0, units)[:, None]  # units of unequal importance
    labels = np.argmax(responses @ weights, -1)
    selectivity = rng.permutation(units) / units  # distinct values: one decreasing and one increasing order
    logits_fn = lambda images, edits: edits["layer"](images) @ weights.astype(np.float32)
    result = layer_ablation(logits_fn, "layer", selectivity, responses, responses, labels, fill=fill,
                            num_points=units + 1, batch_size=100)
    fill_values = responses.mean(0) if fill == "mean" else np.zeros(units)
    expected_orders = {"decreasing": np.argsort(-selectivity), "increasing": np.argsort(selectivity),
                       "random": np.asarray(result["orders"]["random"])}
    assert sorted(expected_orders["random"].tolist()) == list(range(units))
    for name, order in expected_orders.items():
        assert result["orders"][name] == order.tolist(), name
        expected = [brute_force_accuracy(responses, weights, labels, order[:k], fill_values) for k in range(units + 1)]
        np.testing.assert_allclose(result[f"accuracy_{name}"], expected, atol=1e-12, err_msg=name)
    # the orders give different curves here, so a curve drawn in the wrong order cannot pass
    assert result["accuracy_decreasing"] != result["accuracy_increasing"] != result["accuracy_random"]
    singles = [brute_force_accuracy(responses, weights, labels, [u], fill_values) for u in range(units)]
    np.testing.assert_allclose(result["single_unit_drop"], 1.0 - np.asarray(singles), atol=1e-12)
