"""White-box attacks (selectivity_jax.measures.attacks): threat-model constraints, FGSM/PGD ordering, and the analytic
worst case of linear models."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from selectivity_jax.measures.attacks import (
    DEFAULT_LINF_EPSILONS, adversarial_accuracy, adversarial_batches, adversarial_examples, attack_batch, fgsm)

SHAPE = (8, 8, 3)
DIM = int(np.prod(SHAPE))
NUM_CLASSES = 5
EPSILONS = {"linf": (0.0,) + DEFAULT_LINF_EPSILONS, "l2": (0.0, 0.1, 0.25, 0.5, 1.0)}


def make_mlp(seed=0, hidden=32):
    rng = np.random.default_rng(seed)
    w1 = jnp.asarray(rng.normal(size=(DIM, hidden)).astype(np.float32) / np.sqrt(DIM) * 4)
    b1 = jnp.asarray(rng.normal(size=hidden).astype(np.float32))
    w2 = jnp.asarray(rng.normal(size=(hidden, NUM_CLASSES)).astype(np.float32))

    def logits_fn(images):
        normalised = (images - 0.5) / 0.25          # the caller composes normalisation into logits_fn
        return jnp.tanh(normalised.reshape(images.shape[0], -1) @ w1 + b1) @ w2
    return logits_fn


MLP = make_mlp()   # one closure object for the whole module: compiled programs are cached per closure


def mlp_data(num=24, seed=1):
    """uint8 images with saturated pixels (the [0, 1] box is active) and labels = the MLP's predictions, 4 flipped."""
    rng = np.random.default_rng(seed)
    images = np.clip(rng.normal(128, 110, size=(num,) + SHAPE), 0, 255).astype(np.uint8)
    labels = np.array(jnp.argmax(MLP(jnp.asarray(images, jnp.float32) / 255), axis=-1))
    labels[:4] = (labels[:4] + 1) % NUM_CLASSES
    return images, labels


def per_example_norm(delta, norm):
    flat = np.asarray(delta, np.float64).reshape(delta.shape[0], -1)
    return np.abs(flat).max(axis=1) if norm == "linf" else np.linalg.norm(flat, axis=1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_eps_zero_is_clean_accuracy_and_accuracy_falls_with_eps(attack, norm):
    images, labels = mlp_data()
    result = adversarial_accuracy(MLP, images, labels, attack=attack, norm=norm, epsilons=EPSILONS[norm], steps=10,
                                  key=jax.random.key(0), batch_size=8)
    clean = np.mean(np.argmax(np.asarray(MLP(jnp.asarray(images / 255.0, jnp.float32))), axis=-1) == labels)
    assert result["clean_accuracy"] == pytest.approx(clean) == pytest.approx(20 / 24)
    assert result["accuracy"][0] == pytest.approx(clean)
    assert np.all(np.diff(result["accuracy"]) <= 0), result["accuracy"]
    assert result["accuracy"][-1] < clean - 0.2                     # the attack bites
    assert result["epsilons"] == pytest.approx(list(EPSILONS[norm])) and result["num_examples"] == 24


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_never_weaker_than_fgsm(norm):
    images, labels = mlp_data()
    common = dict(norm=norm, epsilons=EPSILONS[norm], batch_size=8)
    fgsm_run = adversarial_examples(MLP, images, labels, attack="fgsm", **common)
    pgd_run = adversarial_examples(MLP, images, labels, attack="pgd", steps=10, key=jax.random.key(3), **common)
    assert np.all(pgd_run["fooled"] >= fgsm_run["fooled"])          # per example: FGSM fools => PGD fools
    assert np.all(pgd_run["fooled"] >= pgd_run["clean_fooled"][None])
    pgd_accuracy, fgsm_accuracy = 1 - pgd_run["fooled"].mean(axis=1), 1 - fgsm_run["fooled"].mean(axis=1)
    assert np.all(pgd_accuracy <= fgsm_accuracy)
    assert np.any(pgd_accuracy < fgsm_accuracy)                      # and strictly stronger somewhere


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_adversarial_inputs_stay_in_the_box_and_the_ball(attack, norm):
    images, labels = mlp_data()
    epsilons = EPSILONS[norm]
    for batch in adversarial_batches(MLP, images, labels, attack=attack, norm=norm, epsilons=epsilons, steps=10,
                                     random_start=True, batch_size=8):
        clean, adversarial = np.asarray(batch["clean"]), np.asarray(batch["adversarial"])
        np.testing.assert_array_equal(clean, images[batch["start"]:batch["start"] + len(clean)] / np.float32(255))
        assert adversarial.min() >= 0.0 and adversarial.max() <= 1.0
        for eps, adv in zip(epsilons, adversarial):
            distance = per_example_norm(adv - clean, norm)
            assert np.all(distance <= eps * (1 + 1e-5) + 1e-7), (eps, distance.max())
        if norm == "linf":  # the box is really active: some pixels sit on 0 or 1 after the attack
            assert np.any(adversarial[-1] == 0.0) and np.any(adversarial[-1] == 1.0)


def linear_logits(weights, bias, images):
    return images.reshape(images.shape[0], -1) @ weights + bias


def linear_model(seed, live_classes=NUM_CLASSES):
    """logits = x.flatten() @ W + b with NUM_CLASSES outputs; classes past ``live_classes`` get a bias of -1e4, which
    no eps-ball reaches (their softmax weight is exactly 0): a two-class model with the five-class shapes.

    The model is a `jax.tree_util.Partial` of one module-level function, so models of equal shapes share compiled
    programs."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(DIM, NUM_CLASSES)).astype(np.float32)
    b = rng.normal(size=NUM_CLASSES).astype(np.float32)
    b[live_classes:] = -1e4
    logits_fn = jax.tree_util.Partial(linear_logits, jnp.asarray(w), jnp.asarray(b))
    return logits_fn, w.astype(np.float64), b.astype(np.float64)


def margins(x, w, b, labels):
    """[N, K] z_y - z_j in float64 (the true class itself: +inf)."""
    logits = np.asarray(x, np.float64).reshape(len(x), -1) @ w + b
    margin = logits[np.arange(len(x)), labels][:, None] - logits
    margin[np.arange(len(x)), labels] = np.inf
    return margin


def analytic_worst_margins(x, w, b, labels, eps, norm):
    """[N, K]: min over the eps-ball of z_y - z_j = margin_yj - eps * ||w_y - w_j||_dual (box inactive)."""
    dual = 1 if norm == "linf" else 2
    differences = w[:, labels].T[:, :, None] - w[None]                                   # [N, D, K] w_y - w_j
    return margins(x, w, b, labels) - eps * np.linalg.norm(differences, ord=dual, axis=1)


def linear_data(w, b, seed, num=16):
    """Images in [0.3, 0.7] (the eps-balls below stay inside [0, 1]) labelled with the clean prediction."""
    images = np.random.default_rng(seed).uniform(0.3, 0.7, size=(num,) + SHAPE).astype(np.float32)
    return images, np.argmax(images.reshape(num, -1).astype(np.float64) @ w + b, axis=1)


@pytest.mark.parametrize("norm,epsilons", [("linf", (0.035, 0.045, 0.055)), ("l2", (0.4, 0.5, 0.62))])
def test_linear_two_class_model_reaches_the_analytic_worst_case(norm, epsilons):
    logits_fn, w, b = linear_model(seed=2, live_classes=2)
    images, labels = linear_data(w, b, seed=3)
    for attack in ("fgsm", "pgd"):
        run = adversarial_examples(logits_fn, images, labels, attack=attack, norm=norm, epsilons=epsilons, steps=10,
                                   random_start=False, batch_size=16)
        for eps, adversarial, fooled in zip(epsilons, run["adversarial"], run["fooled"]):
            assert adversarial.min() > 0.0 and adversarial.max() < 1.0                  # the box never binds
            worst = analytic_worst_margins(images, w, b, labels, eps, norm).min(axis=1)
            reached = margins(adversarial, w, b, labels).min(axis=1)
            error = np.abs(reached - worst) / (1 + np.abs(worst))
            assert np.all(error < 2e-5), (attack, eps, error.max())
            clear = np.abs(worst) > 1e-3
            np.testing.assert_array_equal(fooled[clear], (worst < 0)[clear])
        assert 0 == run["clean_fooled"].mean() < run["fooled"][0].mean() < run["fooled"][-1].mean() < 1


@pytest.mark.parametrize("scale", [1e-4, 1.0])
def test_fgsm_steps_exactly_eps_whatever_the_gradient_size(scale):
    """The fast gradient method moves by eps along the unit-norm ascent direction (Goodfellow et al. 2015; Miyato
    et al. 2016 for L2): with the box inactive, ||x_adv - x||_2 = eps and ||x_adv - x||_inf = eps, for a model whose
    input gradients are tiny (scale 1e-4) as for one whose gradients are large."""
    logits_fn, w, b = linear_model(seed=6)
    logits_fn = jax.tree_util.Partial(linear_logits, jnp.asarray(w * scale, jnp.float32), jnp.asarray(b, jnp.float32))
    images, labels = linear_data(w, b, seed=7)
    for norm, eps, order in (("l2", 0.5, 2), ("linf", 0.05, np.inf)):
        run = adversarial_examples(logits_fn, images, labels, attack="fgsm", norm=norm, epsilons=(eps,),
                                   batch_size=16)
        step = (run["adversarial"][0] - images).reshape(len(images), -1).astype(np.float64)
        np.testing.assert_allclose(np.linalg.norm(step, ord=order, axis=1), eps, rtol=1e-4, err_msg=norm)


@pytest.mark.parametrize("norm,epsilons", [("linf", (0.01, 0.02, 0.04)), ("l2", (0.1, 0.3, 0.6))])
def test_linear_multiclass_model_cannot_beat_the_bound(norm, epsilons):
    logits_fn, w, b = linear_model(seed=4)
    images, labels = linear_data(w, b, seed=5)
    run = adversarial_examples(logits_fn, images, labels, attack="pgd", norm=norm, epsilons=epsilons, steps=10,
                               random_start=False, batch_size=16)
    for eps, adversarial in zip(epsilons, run["adversarial"]):
        worst = analytic_worst_margins(images, w, b, labels, eps, norm).min(axis=1)
        reached = margins(adversarial, w, b, labels).min(axis=1)
        assert np.all(reached >= worst - 1e-4 * (1 + np.abs(worst)))
        # and it gets close: the ascent ends at (or near) the bound for the class it pushes towards
        assert np.median(reached - worst) < 0.25 * np.median(margins(images, w, b, labels).min(axis=1) - worst)


def test_batching_padding_and_single_batch_helpers_agree():
    images, labels = mlp_data(num=10)
    eps = 4 / 255
    whole = attack_batch(MLP, images, labels, [eps], attack="fgsm")["adversarial"][0]
    batched = adversarial_examples(MLP, images, labels, attack="fgsm", epsilons=[eps], batch_size=4)["adversarial"][0]
    np.testing.assert_allclose(batched, np.asarray(whole), atol=1e-7)
    np.testing.assert_allclose(np.asarray(fgsm(MLP, images, labels, eps)), np.asarray(whole), atol=1e-7)
    starts = [b["start"] for b in adversarial_batches(MLP, images, labels, attack="fgsm", epsilons=[eps],
                                                      batch_size=4)]
    assert starts == [0, 4, 8]
    float_input = adversarial_accuracy(MLP, images / np.float32(255), labels, attack="fgsm", epsilons=[eps])
    uint8_input = adversarial_accuracy(MLP, images, labels, attack="fgsm", epsilons=[eps])
    assert float_input["accuracy"] == uint8_input["accuracy"]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        adversarial_accuracy(MLP, images.astype(np.float32), labels, epsilons=[eps])    # 0..255 floats
    for attack_data_set in (adversarial_accuracy, adversarial_examples, adversarial_batches):  # AttackOptions' fields
        with pytest.raises(TypeError, match="stpes"):
            attack_data_set(MLP, images, labels, stpes=3)


def test_no_recompile_between_batches():
    traces = []

    def counting_logits_fn(images):
        traces.append(images.shape)                  # runs only while tracing
        return MLP(images)

    images, labels = mlp_data(num=10)
    run = functools.partial(adversarial_accuracy, counting_logits_fn, attack="fgsm", epsilons=(1 / 255, 2 / 255),
                            batch_size=4)
    run(images[:4], labels[:4])
    traced = len(traces)
    assert traced > 0
    run(images, labels)                               # 3 batches, the last one padded; other epsilon values
    run(images, labels, epsilons=(3 / 255, 5 / 255))
    assert len(traces) == traced


def test_cross_check_against_foolbox():
    """foolbox 3 on JAX: 1-step PGD from the clean input is FGSM; our strongest-iterate PGD fools at least as many."""
    import foolbox as fb  # a test dependency (setup.cfg); imported here so the other tests do not need it
    images, labels = mlp_data()
    x, y = jnp.asarray(images / np.float32(255)), jnp.asarray(labels)
    model = fb.JAXModel(MLP, bounds=(0, 1))
    for norm, eps, attack_class in [("linf", 4 / 255, fb.attacks.LinfPGD), ("l2", 0.5, fb.attacks.L2PGD)]:
        one_step = attack_class(abs_stepsize=eps, steps=1, random_start=False)
        _, theirs, _ = one_step(model, x, y, epsilons=eps)
        np.testing.assert_allclose(np.asarray(fgsm(MLP, images, labels, eps, norm=norm)), np.asarray(theirs),
                                   atol=1e-6)
        steps = 10
        multi_step = attack_class(abs_stepsize=2.5 * eps / steps, steps=steps, random_start=False)
        _, _, their_success = multi_step(model, x, y, epsilons=eps)
        ours = adversarial_examples(MLP, images, labels, attack="pgd", norm=norm, epsilons=[eps], steps=steps,
                                    random_start=False)
        assert np.all(ours["fooled"][0] >= np.asarray(their_success))   # per example: foolbox fools => we fool
