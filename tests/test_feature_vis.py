"""Activation maximisation, Representative Substitution and its correlation with selectivity
(selectivity_jax.measures.feature_vis), and the rs analysis' figures after Chen et al. on the tiny sweep."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import analysis as analysis_config
from helpers import with_overrides
from selectivity_jax.analyses import get_analyses, load
from selectivity_jax.analyses.rs import RS_IMAGES_FILE, RsComparison, array_key, most_selective
from selectivity_jax.analyses.runner import run_analyses
from selectivity_jax.measures.feature_vis import (activation_maximisation, gaussian_blur, generated_responses,
                                                  representative_substitution,
                                                  representative_substitution_from_responses,
                                                  rs_selectivity_correlation, substitutes)

IMAGE_SHAPE = (4, 4, 3)
UNITS = 5
L2 = 0.5


@pytest.fixture(scope="module")
def linear_layer():
    """units_fn(x) = x.flatten() @ W: for the objective w_u . x - l2 ||x||^2 the maximiser is w_u / (2 l2)."""
    weights = jnp.asarray(np.random.default_rng(0).normal(size=(int(np.prod(IMAGE_SHAPE)), UNITS)), jnp.float32)
    return weights, lambda images: images.reshape(images.shape[0], -1) @ weights


def test_am_reaches_the_analytic_optimum_of_a_linear_unit(linear_layer):
    weights, units_fn = linear_layer
    images = activation_maximisation(units_fn, IMAGE_SHAPE, steps=300, learning_rate=0.1, l2=L2)
    assert images.shape == (UNITS, *IMAGE_SHAPE)
    optimum = np.asarray(weights).T.reshape(UNITS, *IMAGE_SHAPE) / (2 * L2)
    np.testing.assert_allclose(images, optimum, atol=1e-3)


def test_iam_reaches_the_analytic_optimum_of_a_linear_unit(linear_layer):
    weights, units_fn = linear_layer
    images = activation_maximisation(units_fn, IMAGE_SHAPE, objective="iam", steps=300, learning_rate=0.1, l2=L2)
    w = np.asarray(weights).T                                              # [U, D]
    contrast = w - (w.sum(axis=0, keepdims=True) - w) / (UNITS - 1)         # w_i - mean_{j != i} w_j
    np.testing.assert_allclose(images, contrast.reshape(UNITS, *IMAGE_SHAPE) / (2 * L2), atol=1e-3)


def test_all_units_at_once_equal_per_unit_runs(linear_layer):
    _, units_fn = linear_layer
    options = dict(steps=20, learning_rate=0.05, l2=0.1, jitter=1, blur_every=5, blur_sigma=0.7, key=3)
    together = activation_maximisation(units_fn, IMAGE_SHAPE, **options)
    alone = activation_maximisation(units_fn, IMAGE_SHAPE, unit_indices=[3], **options)
    assert alone.shape == (1, *IMAGE_SHAPE)
    np.testing.assert_allclose(alone[0], together[3], atol=1e-6)


def test_am_on_a_small_conv_layer_raises_the_unit_and_respects_the_range():
    kernel = jnp.asarray(np.random.default_rng(1).normal(size=(3, 3, 3, 6)), jnp.float32)

    def units_fn(images):
        features = jax.lax.conv_general_dilated(images, kernel, (1, 1), "SAME",
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.mean(jax.nn.relu(features), axis=(1, 2))

    images = activation_maximisation(units_fn, (8, 8, 3), objective="iam", steps=50, learning_rate=0.05, jitter=2,
                                     l2=1e-3, blur_every=5, blur_sigma=0.5, value_range=(-1.0, 1.0), key=0)
    assert images.shape == (6, 8, 8, 3) and bool(jnp.all(jnp.isfinite(images)))
    assert float(jnp.max(jnp.abs(images))) <= 1.0
    responses = units_fn(images)                                           # [6 images, 6 units]
    noise = units_fn(0.01 * jax.random.normal(jax.random.key(0), (6, 8, 8, 3)))
    assert bool(jnp.all(jnp.diagonal(responses) > jnp.diagonal(noise)))
    # each image drives its own unit above the mean of the others (the IAM objective)
    others = (jnp.sum(responses, axis=1) - jnp.diagonal(responses)) / 5
    assert bool(jnp.all(jnp.diagonal(responses) > others))


def test_gaussian_blur():
    constant = jnp.full((6, 5, 2), 3.0)
    np.testing.assert_allclose(gaussian_blur(constant, 1.0), constant, rtol=1e-6)
    impulse = jnp.zeros((9, 9, 1)).at[4, 4, 0].set(1.0)
    blurred = np.asarray(gaussian_blur(impulse, 0.8))[..., 0]
    assert blurred.sum() == pytest.approx(1.0, abs=1e-5)
    assert blurred[4, 4] == blurred.max() < 1.0
    np.testing.assert_allclose(blurred, blurred.T, atol=1e-7)
    np.testing.assert_allclose(blurred, blurred[::-1], atol=1e-7)


def test_representative_substitution_by_hand():
    responses = jnp.array([
        [5.0, 1.0, 2.0, 3.0],   # image for unit 0: nobody beats it  -> 0
        [1.5, 1.0, 0.2, 0.1],   # image for unit 1: one unit beats   -> 1/4 (Eq. 4), 1/3 of the others
        [4.0, 3.0, 2.0, 5.0],   # image for unit 2: three units beat -> 3/4, 3/3
        [1.0, 1.0, 1.0, 1.0],   # image for unit 3: ties do not count -> 0
    ])
    rs = representative_substitution_from_responses(responses, [0, 1, 2, 3])  # default: Chen et al.'s Eq. 4
    np.testing.assert_allclose(rs, [0.0, 1 / 4, 3 / 4, 0.0], atol=1e-7)
    others = representative_substitution_from_responses(responses, [0, 1, 2, 3], denominator="others")
    np.testing.assert_allclose(others, [0.0, 1 / 3, 1.0, 0.0], atol=1e-7)
    # images made for other units than their row number
    np.testing.assert_allclose(representative_substitution_from_responses(responses[:2], [3, 0]), [1 / 4, 0.0],
                               atol=1e-7)
    np.testing.assert_allclose(representative_substitution_from_responses(responses[:2], [3, 0], "others"),
                               [1 / 3, 0.0], atol=1e-7)
    with pytest.raises(ValueError, match="denominator"):
        representative_substitution_from_responses(responses, [0, 1, 2, 3], denominator="layer")


@pytest.mark.parametrize("denominator", ["units", "others"])
def test_rs_of_identical_units_is_zero(denominator):
    """Every unit responds the same to every input: no unit responds MORE than unit i (strict '>'), RS = 0."""
    units = 6
    images = jnp.asarray(np.random.default_rng(3).normal(size=(units, *IMAGE_SHAPE)), jnp.float32)
    identical = lambda x: jnp.tile(jnp.sum(x ** 2, axis=(1, 2, 3))[:, None], (1, units))  # [B, U], equal columns
    rs = representative_substitution(identical, images, denominator=denominator)
    np.testing.assert_array_equal(rs, np.zeros(units))
    # also when the generated inputs come from activation maximisation of those units
    generated = activation_maximisation(identical, IMAGE_SHAPE, steps=5, l2=1.0, key=1)
    np.testing.assert_array_equal(representative_substitution(identical, generated, denominator=denominator),
                                  np.zeros(units))
    assert all(substitutes(row, unit).size == 0 for unit, row in enumerate(np.asarray(identical(images))))


@pytest.mark.parametrize("denominator", ["units", "others"])
def test_rs_of_independent_units_is_zero(denominator):
    """Each unit responds only to its own input (unit u: the mean of image channel u ... of its own patch): RS = 0."""
    units = 4
    images = np.zeros((units, *IMAGE_SHAPE), np.float32)
    for u in range(units):
        images[u, u] = 1.0                                                    # row u of the image lit
    independent = lambda x: jax.nn.relu(jnp.mean(x, axis=(2, 3)))             # [B, H = U]: unit u sees row u
    responses = np.asarray(generated_responses(independent, images))
    np.testing.assert_array_equal(responses, np.eye(units))
    np.testing.assert_array_equal(representative_substitution(independent, images, denominator=denominator),
                                  np.zeros(units))


def test_rs_planted_count_for_both_denominators():
    """Three of the layer's six units respond more to unit 2's input than unit 2 does: RS = 3/6 (Eq. 4), 3/5."""
    rng = np.random.default_rng(4)
    responses = rng.uniform(0.0, 1.0, size=(3, 6)).astype(np.float32)
    responses[np.arange(3), [0, 1, 2]] = 2.0                                  # rows 0 and 1: nobody responds more
    responses[2] = [3.0, 0.5, 2.0, 2.5, 0.1, 4.0]                             # unit 2's input: units 5, 0, 3 more
    unit_indices = [0, 1, 2]
    np.testing.assert_allclose(representative_substitution_from_responses(responses, unit_indices),
                               [0.0, 0.0, 3 / 6], atol=1e-7)
    np.testing.assert_allclose(representative_substitution_from_responses(responses, unit_indices, "others"),
                               [0.0, 0.0, 3 / 5], atol=1e-7)
    np.testing.assert_array_equal(substitutes(responses[2], 2), [5, 0, 3])  # most responsive first
    np.testing.assert_array_equal(substitutes(np.array([1.0, 3.0, 3.0, 2.0]), 0), [1, 2, 3])  # ties: index order
    with pytest.raises(ValueError, match="unit must index"):
        substitutes(responses[2], 6)


def test_dense_layer_planted_substitute_through_activation_maximisation():
    """A dense ReLU layer [B, U] (as the fully connected layer before the classifier): units 0, 2, 3, 4 have
    orthonormal weights and unit 1 twice unit 0's. With AM and an L2 penalty, unit i's input is w_i / (2 l2): unit 1
    responds more to unit 0's input than unit 0 (one substitute: RS(0) = 1/5, or 1/4 of the others); to every other
    unit's input only the unit itself responds above the bias, RS = 0."""
    dims = int(np.prod(IMAGE_SHAPE))
    basis = np.linalg.qr(np.random.default_rng(5).normal(size=(dims, 4)))[0]  # [D, 4] orthonormal columns
    weights = jnp.asarray(np.stack([basis[:, 0], 2 * basis[:, 0], basis[:, 1], basis[:, 2], basis[:, 3]], axis=1),
                          jnp.float32)
    dense = lambda x: jax.nn.relu(x.reshape(x.shape[0], -1) @ weights + 1.0)  # bias 1: active from the start
    images = activation_maximisation(dense, IMAGE_SHAPE, steps=300, learning_rate=0.1, l2=L2)
    np.testing.assert_allclose(images, np.asarray(weights).T.reshape(5, *IMAGE_SHAPE) / (2 * L2), atol=1e-3)
    np.testing.assert_allclose(representative_substitution(dense, images), [1 / 5, 0, 0, 0, 0], atol=1e-7)
    np.testing.assert_allclose(representative_substitution(dense, images, denominator="others"),
                               [1 / 4, 0, 0, 0, 0], atol=1e-7)
    responses = np.asarray(generated_responses(dense, images, batch_size=2))
    assert responses.shape == (5, 5) and substitutes(responses[0], 0).tolist() == [1]
    # IAM on the dense layer: each input drives its unit above the mean of the others; RS from the same matrix
    iam = activation_maximisation(dense, IMAGE_SHAPE, objective="iam", steps=100, learning_rate=0.1, l2=L2)
    responses = np.asarray(dense(iam))
    assert np.all(np.diagonal(responses) > (responses.sum(axis=1) - np.diagonal(responses)) / 4)
    np.testing.assert_array_equal(representative_substitution(dense, iam),
                                  representative_substitution_from_responses(responses, np.arange(5)))


def test_representative_substitution_through_units_fn(linear_layer):
    _, units_fn = linear_layer
    images = jnp.asarray(np.random.default_rng(2).normal(size=(UNITS, *IMAGE_SHAPE)), jnp.float32)
    expected = representative_substitution_from_responses(units_fn(images), np.arange(UNITS))
    np.testing.assert_array_equal(representative_substitution(units_fn, images), expected)
    np.testing.assert_array_equal(representative_substitution(units_fn, images, batch_size=2), expected)
    subset = representative_substitution(units_fn, images[:2], unit_indices=[4, 2])
    np.testing.assert_array_equal(subset, representative_substitution_from_responses(units_fn(images[:2]), [4, 2]))
    np.testing.assert_array_equal(generated_responses(units_fn, images, batch_size=3), units_fn(images))


def test_rs_selectivity_correlation():
    rs = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    assert rs_selectivity_correlation(rs, np.array([0.9, 0.7, 0.5, 0.2, 0.1])).rho == pytest.approx(-1.0)
    result = rs_selectivity_correlation(rs, np.array([0.1, 0.3, 0.2, 0.5, 0.9]))
    assert result.rho == pytest.approx(0.9) and 0 < result.pvalue < 0.1
    assert np.isnan(rs_selectivity_correlation(rs, np.full(5, 0.3)).rho)
    with pytest.raises(ValueError, match="one value per unit"):
        rs_selectivity_correlation(rs, np.zeros(4))


# ----------------------------------------------------------------------------------------------------------------------
# the rs analysis on the tiny sweep: RS under both denominators, the stored response matrix and the figures
# ----------------------------------------------------------------------------------------------------------------------

LAYER = "stage3_block2/out"  # 16 units in the tiny ResNet20, 4 of them analysed
# tests/test_analyses.py's SMALL settings of rs (the same programs: compiled once per test session)
SMALL = {"layers": (LAYER,), "num_examples": 40, "batch_size": 40, "rs.steps": 4, "rs.max_units": 4,
         "rs.grid_units": 2, "rs.substitutes": 3}
RUNS = ("alpha_-2_seed_0", "alpha_0_seed_0", "alpha_2_seed_0")


@pytest.fixture(scope="module")
def rs_sweeps(tiny_sweep, tmp_path_factory):
    """{denominator: (sweep, outcome)}: the rs analysis of a copy of the tiny sweep with Chen et al.'s denominator,
    and of its alpha = 0 run alone with the other one."""
    done = {}
    for denominator, runs in (("units", RUNS), ("others", RUNS[1:2])):
        copy = tmp_path_factory.mktemp(f"rs_{denominator}") / "sweep"
        for run in runs:
            shutil.copytree(tiny_sweep / run, copy / run, ignore=shutil.ignore_patterns("analysis"))
        shutil.copy(tiny_sweep / "sweep.json", copy / "sweep.json")
        workdir = copy if len(runs) > 1 else copy / runs[0]
        config = with_overrides(analysis_config.get_config(), {**SMALL, "rs.denominator": denominator})
        done[denominator] = copy, run_analyses(str(workdir), get_analyses("rs"), config, log=lambda _: None)
    return done


def test_the_substitutes_figure_shows_the_most_selective_unit_with_substitutes():
    assert most_selective([0.2, np.nan, 0.9, 0.9]) == 2                      # first of equals; NaN least selective
    assert most_selective([0.2, 0.5, 0.9], rs=[0.1, 0.3, 0.0]) == 1         # unit 2 has no substitutes
    assert most_selective([0.2, 0.5, 0.9], rs=[0.0, 0.0, 0.0]) == 2         # none has: the most selective


def test_rs_settings_are_checked():
    analysis = load("rs")
    settings = analysis.default_settings()
    assert settings.denominator == "units"
    for field, value in (("denominator", "layer"), ("substitutes", 0)):
        bad = analysis.default_settings()
        bad[field] = value
        with pytest.raises(ValueError, match=f"rs.{field}"):
            analysis.check(bad)


def test_rs_analysis_counts_in_the_stored_response_matrix(rs_sweeps):
    sweep, outcome = rs_sweeps["units"]
    others_sweep, others_outcome = rs_sweeps["others"]
    for run in RUNS:
        result = outcome.runs[str(sweep / run)]["rs"]
        record = result.result
        assert record.denominator == "units" and result.settings["rs"]["denominator"] == "units"
        stored = json.loads((sweep / run / "analysis" / "rs.json").read_text())
        assert stored["denominator"] == "units" and stored["substitutes"] == 3
        with np.load(sweep / run / "analysis" / RS_IMAGES_FILE) as npz:
            arrays = {name: npz[name] for name in npz.files}
        layer = record.layers[LAYER]
        assert layer.units == [0, 5, 10, 15]
        for objective in ("am", "iam"):
            responses = arrays[array_key(LAYER, objective, "responses")]
            assert responses.shape == (4, 16) and arrays[array_key(LAYER, objective)].shape == (4, 32, 32, 3)
            own = responses[np.arange(4), layer.units]
            counts = np.sum(responses > own[:, None], axis=1)
            np.testing.assert_allclose(layer.objectives[objective].rs, counts / 16, atol=1e-7)
            if run == "alpha_0_seed_0":  # the same generated inputs, divided by the 15 other units
                other = others_outcome.runs[str(others_sweep / run)]["rs"].result
                assert other.denominator == "others"
                np.testing.assert_allclose(other.layers[LAYER].objectives[objective].rs, counts / 15, atol=1e-7)
        # the substitutes figure's inputs: the first 3 substitutes that were not analysed of the most selective unit
        # with substitutes (RS > 0)
        responses = arrays[array_key(LAYER, "iam", "responses")]
        chosen = most_selective(layer.selectivity, layer.objectives["iam"].rs)
        first = substitutes(responses[chosen], layer.units[chosen])[:3]
        extra = arrays[array_key(LAYER, "iam", "substitute_units")]
        assert extra.tolist() == [j for j in first.tolist() if j not in layer.units]
        assert arrays[array_key(LAYER, "iam", "substitute_images")].shape == (len(extra), 32, 32, 3)
        assert array_key(LAYER, "am", "substitute_units") not in arrays


def test_rs_figures_after_chen_et_al(rs_sweeps):
    sweep, outcome = rs_sweeps["units"]
    analysis = load("rs")
    for run in RUNS:
        files = set((sweep / run / "analysis").iterdir())
        for figure in ("spearman", "scatter", "substitutes", "grid"):
            assert sweep / run / "analysis" / f"rs_{figure}.png" in files, figure
    result = outcome.runs[str(sweep / "alpha_2_seed_0")]["rs"]
    layer = result.result.layers[LAYER]
    figures = analysis.run_figures(result)
    # scatter: one point per analysed unit at (selectivity, RS), a colour per objective (Figs. 1, 4, 5)
    ax = figures["scatter"].axes[0]
    assert ax.get_title() == LAYER and "U" in ax.get_ylabel()
    for collection, objective in zip(ax.collections, ("am", "iam")):
        np.testing.assert_allclose(collection.get_offsets(), np.c_[layer.selectivity, layer.objectives[objective].rs])
    # substitutes: the most selective unit's IAM input, then its substitutes' (at most 3), most responsive first
    with np.load(sweep / "alpha_2_seed_0" / "analysis" / RS_IMAGES_FILE) as npz:
        responses = npz[array_key(LAYER, "iam", "responses")]
        iam_images = npz[array_key(LAYER, "iam")]
    chosen = most_selective(layer.selectivity, layer.objectives["iam"].rs)
    assert layer.objectives["iam"].rs[chosen] > 0
    unit = layer.units[chosen]
    expected = substitutes(responses[chosen], unit)[:3].tolist()
    row = figures["substitutes"].axes
    assert len(row) == 1 + min(3, max(1, len(substitutes(responses[chosen], unit))))
    assert row[0].get_title().startswith(f"unit {unit}:")
    np.testing.assert_allclose(row[0].images[0].get_array(), np.clip(iam_images[chosen], 0, 1))
    assert [ax.get_title().split(":")[0] for ax in row[1:1 + len(expected)]] == [f"unit {j}" for j in expected]
    # Spearman by depth (Fig. 3b): layers on the x axis, for one run and for the sweep by alpha
    comparison = RsComparison.from_json(json.loads((sweep / "analysis" / "rs.json").read_text()))
    for ax in (figures["spearman"].axes[0], *analysis.sweep_figures(comparison)["spearman"].axes[:2]):
        assert ax.get_xlabel() == "layer (forward order)"
        assert [tick.get_text() for tick in ax.get_xticklabels()] == [LAYER]
    assert {"rs_spearman.png", "rs_summary.png"} <= {p.name for p in (sweep / "analysis").iterdir()}
