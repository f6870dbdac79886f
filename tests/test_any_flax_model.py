"""The analyses of a linen model trained outside the project (its own model code, loss and loop): points found by
capture, layer edits through method interception, results and report like a run directory's."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import analysis as analysis_config
from helpers import with_overrides
from selectivity_jax import ReLU
from selectivity_jax.analyses import get_analyses
from selectivity_jax.analyses.runner import analyze_model
from selectivity_jax.data.synthetic import synthetic_images
from selectivity_jax.trained import from_flax

NUM_CLASSES = 4


class SmallCNN(nn.Module):
    """A user's model: two conv + ReLU-module blocks, global mean, a classifier."""

    @nn.compact
    def __call__(self, x):
        x = ReLU(name="relu1")(nn.Conv(8, (3, 3), name="conv1")(x))
        x = ReLU(name="relu2")(nn.Conv(16, (3, 3), strides=(2, 2), name="conv2")(x))
        return nn.Dense(NUM_CLASSES, name="head")(x.mean(axis=(1, 2)))


@pytest.fixture(scope="module")
def trained():
    """The model trained for 40 Adam steps on 16x16 synthetic images, as its author would: (model, variables,
    (images, labels) of a held-out split)."""
    images, labels = synthetic_images(NUM_CLASSES, 60, 16, seed=3)
    order = np.random.default_rng(0).permutation(len(labels))
    train, test = order[:160], order[160:]
    model = SmallCNN()
    params = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))["params"]
    optimizer = optax.adam(0.01)
    opt_state = optimizer.init(params)
    x, y = jnp.asarray(images[train], jnp.float32) / 255.0, jnp.asarray(labels[train])

    @jax.jit
    def step(params, opt_state):
        loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, x), y).mean()
        updates, opt_state = optimizer.update(jax.grad(loss)(params), opt_state)
        return optax.apply_updates(params, updates), opt_state

    for _ in range(40):
        params, opt_state = step(params, opt_state)
    return model, {"params": params}, (images[test], labels[test])


@pytest.fixture(scope="module")
def run(trained):
    model, variables, (images, _) = trained
    return from_flax(model.apply, variables, mean=(0.0,) * 3, std=(1.0,) * 3, num_classes=NUM_CLASSES,
                     example=images[:2], name="small_cnn")


def test_points_logits_and_edits(trained, run):
    model, variables, (images, labels) = trained
    assert run.model.all_relu_names() == ["relu1", "relu2"] == run.layer_names
    np.testing.assert_allclose(np.asarray(run.logits(images)),
                               np.asarray(model.apply(variables, jnp.asarray(images, jnp.float32) / 255.0)),
                               rtol=1e-6, atol=1e-6)
    assert run.responses(images[:3])["relu2"].shape == (3, 16)
    zeroed = np.asarray(run.logits(images, edits={"relu2": jnp.zeros_like}))
    bias = np.asarray(variables["params"]["head"]["bias"])
    np.testing.assert_allclose(zeroed, np.broadcast_to(bias, zeroed.shape), atol=1e-6)  # the edit reached the head
    with pytest.raises(ValueError, match="name no post-ReLU point"):
        run.logits(images, edits={"relu9": jnp.zeros_like})
    with pytest.raises(ValueError, match=r"layers \['conv1'\] are not points"):
        from_flax(model.apply, variables, mean=(0.0,) * 3, std=(1.0,) * 3, num_classes=NUM_CLASSES,
                  example=images[:2], layers=["conv1"])


def test_analyses_of_a_model_trained_elsewhere(trained, run, tmp_path):
    _, _, (images, labels) = trained
    config = with_overrides(analysis_config.get_config(),
                            {"num_examples": 0, "batch_size": 40, "basis.steps": 3, "rotation.num_t": 3,
                             "ablation.num_points": 3, "rs.steps": 3, "rs.max_units": 4, "rs.grid_units": 2,
                             "attacks.attacks": ("fgsm",), "attacks.norms": ("linf",),
                             "attacks.linf_epsilons": (4 / 255,), "gradients.num_examples": 8,
                             "gradients.max_units": 4})
    names = "rotation,ablation,basis,attacks,gradients,rs"
    results = analyze_model(run, (images, labels), get_analyses(names), config, str(tmp_path), log=lambda _: None)
    clean = float(np.mean(np.argmax(np.asarray(run.logits(images)), -1) == labels))
    assert clean > 0.5  # it learned something
    assert [r.test_accuracy for r in results.values()] == [pytest.approx(clean)] * len(results)
    rotation = results["rotation"].result
    assert rotation.clean_accuracy == pytest.approx(clean)
    for layer in ("relu1", "relu2"):
        assert rotation.layers[layer].accuracy_rotated_and_undone == pytest.approx(clean, abs=1e-9)
    ablation = json.loads((tmp_path / "analysis" / "ablation.json").read_text())
    curve = ablation["layers"]["relu2"]["accuracy_decreasing"]
    assert curve[0] == pytest.approx(clean) and curve[-1] != pytest.approx(clean)  # ablation reaches the model
    report = (tmp_path / "analysis" / "report.md").read_text()
    assert "Axis-aligned selectivity under rotation" in report and "Unit ablation" in report
    assert (tmp_path / "analysis" / "rotation_curves.png").exists()
    with pytest.raises(ValueError, match="needs the model's data set"):
        analyze_model(run, (images, labels), get_analyses("corruptions"), config, str(tmp_path / "c"),
                      log=lambda _: None)
    with pytest.raises(ValueError, match="compares the runs of a sweep"):
        analyze_model(run, (images, labels), get_analyses("similarity"), config, str(tmp_path / "s"))


class SownCNN(nn.Module):
    """The README's advice for plain `nn.relu`: sow the value after the call (a point no layer edit reaches)."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), name="conv1")(x))
        self.sow("intermediates", "relu1", x)
        x = ReLU(name="relu2")(nn.Conv(16, (3, 3), strides=(2, 2), name="conv2")(x))
        return nn.Dense(NUM_CLASSES, name="head")(x.mean(axis=(1, 2)))


def test_edits_of_sown_points_are_refused_before_any_work(trained, tmp_path):
    """Ablation and rotation edit module outputs; on a sown point they are refused up front with the way out, and
    the analyses that do not edit (and the edits of module points) still run."""
    _, _, (images, labels) = trained
    model = SownCNN()
    variables = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    run = from_flax(model.apply, variables, mean=(0.0,) * 3, std=(1.0,) * 3, num_classes=NUM_CLASSES,
                    example=images[:2])
    assert run.model.sown == ("relu1",) and run.layer_names == ["relu1", "relu2"]
    config = with_overrides(analysis_config.get_config(), {"num_examples": 0, "batch_size": 40,
                                                            "rotation.num_t": 3, "ablation.num_points": 3})
    out = tmp_path / "sown"
    with pytest.raises(ValueError, match=r"ablation, rotation edit layer outputs.*\['relu1'\] are sown values: "
                                         r"write those ReLUs as modules"):
        analyze_model(run, (images, labels), get_analyses("ablation,rotation"), config, str(out), log=lambda _: None)
    assert not out.exists()
    only_module = with_overrides(config, {"layers": ("relu2",)})
    results = analyze_model(run, (images, labels), get_analyses("rotation"), only_module, str(out),
                            log=lambda _: None)
    assert list(results["rotation"].result.layers) == ["relu2"]
