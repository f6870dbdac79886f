"""White-box adversarial attacks in JAX: FGSM and PGD under L-infinity and L2, jitted, batched, vmapped over epsilon.

Worst-case perturbations of Leavitt & Morcos, "Linking average- and worst-case perturbation robustness via class
selectivity and dimensionality" (white-box FGSM and PGD against the selectivity-regularized networks).

Conventions:

- A model is ``logits_fn(images) -> logits [B, K]``, ``images`` float32 [B, ...] (e.g. [B, H, W, C]) in PIXEL space
  [0, 1]; the caller composes the model's input normalisation into ``logits_fn``. Examples must not interact (batch
  norm in inference mode): the loss is summed over the batch, so each example's gradient is its own.
  Pass ``jax.tree_util.Partial(apply_fn, variables)`` to have the variables enter the compiled program as arguments;
  a plain closure works too, but the arrays it closes over are baked into the program as constants, and the program
  is compiled (and cached) once per closure OBJECT: reuse the same closure across calls.
- Loss: cross-entropy of the true label, in float32. It is maximised through the equivalent objective
  ``log_odds = logsumexp_{j != y} z_j - z_y`` (``cross_entropy = softplus(log_odds)``, a monotone function of it: the
  same maximisers and, per example, the same gradient DIRECTION, which is all that FGSM and PGD steps use). Unlike the
  cross-entropy's, its gradient does not vanish or turn in float32 when the softmax saturates (``p_y`` rounds to 1 at
  margins above ~17, where the cross-entropy gradient loses its ``-w_y`` part and later underflows to 0).
- Threat model: ``||x_adv - x|| <= eps`` (L-inf or L2 over all values of one example) and ``0 <= x_adv <= 1``, both
  enforced after EVERY step (up to float32 rounding): L-inf clips to ``[max(x - eps, 0), min(x + eps, 1)]``, the exact
  projection onto the intersection; L2 rescales the perturbation to norm ``<= eps`` and then clips to [0, 1] (clipping
  to a box that contains ``x`` never moves a point away from ``x``, so the result lies in both sets).
- FGSM: one step of length eps from the clean input along ``sign(grad)`` (L-inf) or ``grad / ||grad||_2`` (L2, the
  fast gradient method), projected. ``steps``, ``step_size`` and ``random_start`` do not apply.
- PGD: from the clean input (``random_start=False``) or a uniform random point of the eps-ball (L-inf: the cube; L2:
  the ball; one draw per example, scaled by each epsilon), ``steps`` steps of ``step_size`` (default
  ``2.5 * eps / steps``) along the same directions, projected after every step.

PGD is never weaker than FGSM, by construction: per example it returns the STRONGEST of its candidates, namely the clean
input, the FGSM point at the same eps, and every PGD iterate (start, ..., final), where "stronger" means misclassified
beats correctly classified, then the higher loss. Hence every example that FGSM fools is fooled by PGD too, and PGD
accuracy <= min(FGSM accuracy, clean accuracy) at every eps. (Accuracy is not guaranteed to fall with eps: each eps
is attacked on its own.) (Both sides are computed by the same code; the only caveat
is floating-point differences between two separately compiled programs, which we have not seen on CPU.) Accuracy is
read from the misclassification flags recorded when the candidate was chosen, not from a second forward pass.

Everything heavy runs in one jitted call per batch: all epsilons of the batch at once (vmapped), the PGD loop as a
``lax.scan``; the configuration is static, epsilons and step sizes are traced, and the last batch is padded to the
batch size, so a data set of any size compiles once per (model, batch shape, number of epsilons, configuration).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
LogitsFn = Callable[[Array], Array]

ATTACKS = ("fgsm", "pgd")
NORMS = ("linf", "l2")
NORM_LABELS = {"linf": "L-inf", "l2": "L2"}
DEFAULT_LINF_EPSILONS = (1 / 255, 2 / 255, 4 / 255, 8 / 255)
DEFAULT_L2_EPSILONS = (0.125, 0.25, 0.5, 1.0)  # our choice for 32x32x3 / 64x64x3 images in [0, 1]
DEFAULT_STEP_SIZE_FACTOR = 2.5                  # step size = 2.5 * eps / steps: the path can cross the ball


# ----------------------------------------------------------------------------------------------------------- helpers

def jittable(fn: Callable[..., Any]) -> jax.tree_util.Partial:
    """``fn`` as a pytree that jitted functions can take as an ordinary argument.

    A `jax.tree_util.Partial` is returned as it is (its bound arrays are traced arguments); any other callable is
    wrapped in an argument-free ``Partial``, whose tree structure (hence the jit cache key) is the callable itself.
    """
    if isinstance(fn, jax.tree_util.Partial):
        return fn
    if not callable(fn):
        raise TypeError(f"expected a callable (images -> outputs); got {type(fn).__name__}")
    return jax.tree_util.Partial(fn)


def epsilon_label(epsilon: float, norm: str) -> str:
    """A budget as tables print it: '4/255' (L-inf), '0.5' (L2), '0'."""
    return f"{epsilon * 255:.3g}/255" if norm == "linf" and epsilon > 0 else f"{epsilon:g}"


def to_unit_interval(images: Any) -> np.ndarray:
    """uint8 [N, ...] (divided by 255) or float [N, ...] already in [0, 1] -> float32 host array in [0, 1].

    Done on the host on purpose: a compiled ``x / 255`` may become ``x * (1 / 255)``, one rounding away, and the
    same pixels must give the same inputs whichever form they came in."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255.0)
    if not np.issubdtype(images.dtype, np.floating):
        raise TypeError(f"images must be uint8 or float in [0, 1]; got dtype {images.dtype}")
    images = images.astype(np.float32)
    if images.size and (not np.all(np.isfinite(images)) or images.min() < 0.0 or images.max() > 1.0):
        raise ValueError(f"float images must lie in [0, 1] (pixel space; normalise inside logits_fn); got range "
                         f"[{np.nanmin(images):.4g}, {np.nanmax(images):.4g}]")
    return images


def padded_batches(num_examples: int, batch_size: int) -> Iterator[tuple[int, int]]:
    """(start, valid) per batch; every batch is processed at size ``batch_size`` (the last one padded)."""
    for start in range(0, num_examples, batch_size):
        yield start, min(batch_size, num_examples - start)


def pad_to(array: np.ndarray, size: int) -> np.ndarray:
    """Pads axis 0 of a host array with zeros up to ``size`` rows."""
    missing = size - array.shape[0]
    if missing <= 0:
        return array
    return np.concatenate([array, np.zeros((missing,) + array.shape[1:], array.dtype)])


def _broadcast_per_example(values: Array, like: Array) -> Array:
    """[B] -> [B, 1, ..., 1] with ``like.ndim`` axes."""
    return values.reshape(values.shape + (1,) * (like.ndim - values.ndim))


def _l2_norm(x: Array) -> Array:
    """[B, ...] -> [B] L2 norm over all axes but the first."""
    return jnp.sqrt(jnp.sum(jnp.square(x), axis=tuple(range(1, x.ndim))))


def _ascent_direction(grad: Array, norm: str) -> Array:
    """Steepest-ascent direction of unit length in the given norm: sign(g) (L-inf) or g / ||g||_2 (L2); 0 for g = 0."""
    if norm == "linf":
        return jnp.sign(grad)
    grad_norm = _l2_norm(grad)
    return grad / _broadcast_per_example(jnp.where(grad_norm > 0, grad_norm, 1.0), grad)


def _project(candidate: Array, clean: Array, epsilon: Array, norm: str) -> Array:
    """Onto {x : ||x - clean|| <= epsilon} and then [0, 1] (see the module docstring)."""
    if norm == "linf":
        return jnp.clip(candidate, jnp.maximum(clean - epsilon, 0.0), jnp.minimum(clean + epsilon, 1.0))
    delta = candidate - clean
    delta_norm = _l2_norm(delta)
    scale = jnp.minimum(1.0, epsilon / jnp.where(delta_norm > 0, delta_norm, 1.0))
    return jnp.clip(clean + delta * _broadcast_per_example(scale, delta), 0.0, 1.0)


def _unit_ball_noise(key: Array, shape: tuple[int, ...], norm: str) -> Array:
    """Uniform random points of the unit ball of ``norm`` (L-inf: the cube [-1, 1]^d; L2: the ball), one per example.

    Random starts scale the same draw by each epsilon (common random numbers across the epsilons of a batch)."""
    if norm == "linf":
        return jax.random.uniform(key, shape, jnp.float32, -1.0, 1.0)
    direction_key, radius_key = jax.random.split(key)
    direction = jax.random.normal(direction_key, shape, jnp.float32)
    direction = direction / _broadcast_per_example(jnp.maximum(_l2_norm(direction), 1e-12), direction)
    radius = jax.random.uniform(radius_key, shape[:1], jnp.float32) ** (1.0 / math.prod(shape[1:]))
    return direction * _broadcast_per_example(radius, direction)


def _loss_and_fooled(logits_fn: LogitsFn, images: Array, labels: Array) -> tuple[Array, Array]:
    """Per-example ``log_odds = logsumexp_{j != y} z_j - z_y`` [B] (module docstring) and misclassification [B]."""
    logits = logits_fn(images).astype(jnp.float32)
    if logits.ndim != 2 or logits.shape[0] != images.shape[0] or logits.shape[1] < 2:
        raise ValueError(f"logits_fn must return logits [B, K] with K >= 2, B = {images.shape[0]}; got {logits.shape}")
    is_true = jax.nn.one_hot(labels, logits.shape[1], dtype=jnp.bool_)
    true_logit = jnp.sum(jnp.where(is_true, logits, 0.0), axis=1)
    log_odds = jax.nn.logsumexp(jnp.where(is_true, -jnp.inf, logits), axis=1) - true_logit
    return log_odds, jnp.argmax(logits, axis=-1) != labels


def _loss_fooled_and_grad(logits_fn: LogitsFn, images: Array, labels: Array) -> tuple[Array, Array, Array]:
    """As `_loss_and_fooled`, plus the gradient of each example's log-odds w.r.t. its own input [B, ...]."""
    def total_loss(x: Array) -> tuple[Array, tuple[Array, Array]]:
        loss, fooled = _loss_and_fooled(logits_fn, x, labels)
        return jnp.sum(loss), (loss, fooled)

    (_, (loss, fooled)), grad = jax.value_and_grad(total_loss, has_aux=True)(images)
    return loss, fooled, grad


Candidate = tuple[Array, Array, Array]  # (images [B, ...], log-odds loss [B], fooled [B])


def _stronger(best: Candidate, candidate: Candidate) -> Candidate:
    """Per example, the stronger of two candidates: misclassified first, then the higher loss (ties keep ``best``).

    The loss compared is the log-odds, which orders candidates as the cross-entropy does but without float32 ties
    among confidently classified ones."""
    best_x, best_loss, best_fooled = best
    x, loss, fooled = candidate
    take = (fooled & ~best_fooled) | ((fooled == best_fooled) & (loss > best_loss))
    return (jnp.where(_broadcast_per_example(take, x), x, best_x),
            jnp.where(take, loss, best_loss), jnp.where(take, fooled, best_fooled))


# ------------------------------------------------------------------------------------------------------ the attacks

@dataclasses.dataclass(frozen=True)
class AttackConfig:
    """Static part of an attack: ``attack`` in {"fgsm", "pgd"}, ``norm`` in {"linf", "l2"}, PGD ``steps`` and
    ``random_start`` (ignored by FGSM)."""

    attack: str = "pgd"
    norm: str = "linf"
    steps: int = 10
    random_start: bool = True

    def __post_init__(self) -> None:
        if self.attack not in ATTACKS:
            raise ValueError(f"attack must be one of {ATTACKS}; got {self.attack!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}; got {self.norm!r}")
        if self.attack == "pgd" and (not isinstance(self.steps, int) or self.steps < 1):
            raise ValueError(f"PGD needs steps >= 1; got {self.steps!r}")
        if self.attack == "fgsm":  # one canonical config (and one compiled program) per FGSM norm
            object.__setattr__(self, "steps", 1)
            object.__setattr__(self, "random_start", False)


def _attack_one_epsilon(logits_fn: LogitsFn, clean: Array, labels: Array, clean_state: Candidate, clean_grad: Array,
                        start_noise: Array | None, epsilon: Array, step_size: Array,
                        config: AttackConfig) -> Candidate:
    """One epsilon (scalar) over one batch -> (adversarial [B, ...], loss [B], fooled [B])."""
    fgsm_point = _project(clean + epsilon * _ascent_direction(clean_grad, config.norm), clean, epsilon, config.norm)
    fgsm = (fgsm_point, *_loss_and_fooled(logits_fn, fgsm_point, labels))
    if config.attack == "fgsm":
        return fgsm
    best = _stronger(clean_state, fgsm)
    start = clean if start_noise is None else _project(clean + epsilon * start_noise, clean, epsilon, config.norm)

    def step(carry: tuple[Array, Candidate], _: None) -> tuple[tuple[Array, Candidate], None]:
        x, best = carry
        loss, fooled, grad = _loss_fooled_and_grad(logits_fn, x, labels)
        best = _stronger(best, (x, loss, fooled))
        x = _project(x + step_size * _ascent_direction(grad, config.norm), clean, epsilon, config.norm)
        return (x, best), None

    (final, best), _ = jax.lax.scan(step, (start, best), None, length=config.steps)
    return _stronger(best, (final, *_loss_and_fooled(logits_fn, final, labels)))


@functools.partial(jax.jit, static_argnames=("config",))
def _attack_batch(logits_fn: jax.tree_util.Partial, images: Array, labels: Array, epsilons: Array,
                  step_sizes: Array, key: Array, config: AttackConfig) -> dict[str, Array]:
    clean = images.astype(jnp.float32)
    labels = labels.astype(jnp.int32)
    clean_loss, clean_fooled, clean_grad = _loss_fooled_and_grad(logits_fn, clean, labels)
    start_noise = None
    if config.attack == "pgd" and config.random_start:
        start_noise = _unit_ball_noise(key, clean.shape, config.norm)
    attack = functools.partial(_attack_one_epsilon, logits_fn, clean, labels, (clean, clean_loss, clean_fooled),
                               clean_grad, start_noise, config=config)
    adversarial, loss, fooled = jax.vmap(attack)(epsilons, step_sizes)
    return {"adversarial": adversarial, "loss": jax.nn.softplus(loss), "fooled": fooled,
            "clean": clean, "clean_loss": jax.nn.softplus(clean_loss), "clean_fooled": clean_fooled}


def _step_sizes(epsilons: np.ndarray, config: AttackConfig, step_size: float | None,
                step_size_factor: float) -> np.ndarray:
    if config.attack == "fgsm":
        return epsilons.copy()  # FGSM: one step of length eps
    if step_size is not None:
        if not step_size > 0:
            raise ValueError(f"step_size must be positive; got {step_size}")
        return np.full_like(epsilons, step_size)
    return (step_size_factor * epsilons / config.steps).astype(np.float32)


def _epsilon_array(epsilons: float | Sequence[float] | None, norm: str) -> np.ndarray:
    if epsilons is None:
        epsilons = DEFAULT_LINF_EPSILONS if norm == "linf" else DEFAULT_L2_EPSILONS
    epsilons = np.atleast_1d(np.asarray(epsilons, np.float32))
    if epsilons.ndim != 1 or epsilons.size == 0 or not np.all(np.isfinite(epsilons)) or np.any(epsilons < 0):
        raise ValueError(f"epsilons must be a non-empty sequence of finite values >= 0; got {epsilons}")
    return epsilons


def attack_batch(
    logits_fn: LogitsFn,
    images: Any,
    labels: Any,
    epsilons: float | Sequence[float] | None = None,
    *,
    attack: str = "pgd",
    norm: str = "linf",
    steps: int = 10,
    step_size: float | None = None,
    step_size_factor: float = DEFAULT_STEP_SIZE_FACTOR,
    random_start: bool = True,
    key: Array | None = None,
) -> dict[str, Array]:
    """Attacks one batch at every epsilon in one jitted call.

    Args:
      logits_fn: images float32 [B, ...] in [0, 1] -> logits [B, K] (see the module docstring).
      images: uint8 [B, ...] (divided by 255) or float [B, ...] in [0, 1].
      labels: int [B] true labels.
      epsilons: [E] perturbation budgets in pixel units ([0, 1] scale); default by norm (``DEFAULT_*_EPSILONS``).
      attack, norm, steps, random_start: see `AttackConfig`.
      step_size: PGD step length, the same for every epsilon; None -> ``step_size_factor * eps / steps`` per eps.
      key: PRNG key of the random start; None -> ``jax.random.key(0)``.

    Returns:
      device arrays: "adversarial" float32 [E, B, ...], "loss" (cross-entropy) and "fooled" [E, B] at the returned
      points,
      "clean" float32 [B, ...] (the input in [0, 1]), "clean_loss" and "clean_fooled" [B], "epsilons" and
      "step_sizes" [E].
    """
    config = AttackConfig(attack=attack, norm=norm, steps=steps, random_start=random_start)
    epsilon_values = _epsilon_array(epsilons, norm)
    step_sizes = _step_sizes(epsilon_values, config, step_size, step_size_factor)
    key = jax.random.key(0) if key is None else key
    result = _attack_batch(jittable(logits_fn), jnp.asarray(to_unit_interval(images)), jnp.asarray(labels),
                           jnp.asarray(epsilon_values), jnp.asarray(step_sizes), key, config=config)
    return {**result, "epsilons": jnp.asarray(epsilon_values), "step_sizes": jnp.asarray(step_sizes)}


def fgsm(logits_fn: LogitsFn, images: Any, labels: Any, epsilon: float, *, norm: str = "linf") -> Array:
    """FGSM adversarial examples of one batch at one epsilon: float32 [B, ...] in [0, 1]."""
    return attack_batch(logits_fn, images, labels, [epsilon], attack="fgsm", norm=norm)["adversarial"][0]


def pgd(logits_fn: LogitsFn, images: Any, labels: Any, epsilon: float, *, norm: str = "linf", steps: int = 10,
        step_size: float | None = None, random_start: bool = True, key: Array | None = None) -> Array:
    """PGD adversarial examples (strongest iterate, never weaker than FGSM) of one batch at one epsilon: [B, ...]."""
    return attack_batch(logits_fn, images, labels, [epsilon], attack="pgd", norm=norm, steps=steps,
                        step_size=step_size, random_start=random_start, key=key)["adversarial"][0]


# ---------------------------------------------------------------------------------------------------- data sets

@dataclasses.dataclass(frozen=True)
class AttackOptions:
    """The keyword arguments of `adversarial_batches`, `adversarial_examples` and `adversarial_accuracy`, with their
    defaults: those of `attack_batch`, plus ``batch_size`` (examples per jitted call; the last batch is padded)."""

    attack: str = "pgd"
    norm: str = "linf"
    epsilons: float | Sequence[float] | None = None
    steps: int = 10
    step_size: float | None = None
    step_size_factor: float = DEFAULT_STEP_SIZE_FACTOR
    random_start: bool = True
    key: Array | None = None
    batch_size: int = 256

    def config(self) -> AttackConfig:
        """The static part, as compiled (FGSM canonicalised to one step without random start)."""
        return AttackConfig(attack=self.attack, norm=self.norm, steps=self.steps, random_start=self.random_start)

    def epsilon_values(self) -> np.ndarray:
        """[E] float32 budgets (by default ``DEFAULT_*_EPSILONS`` of the norm)."""
        return _epsilon_array(self.epsilons, self.norm)

    def step_sizes(self) -> np.ndarray:
        """[E] float32 step length per budget."""
        return _step_sizes(self.epsilon_values(), self.config(), self.step_size, self.step_size_factor)


def _attacked_batches(logits_fn: LogitsFn, images: Any, labels: Any, options: AttackOptions
                      ) -> Iterator[dict[str, Any]]:
    """`adversarial_batches` once its keyword arguments are bound (inputs are checked on the first ``next``)."""
    config = options.config()
    epsilon_values = options.epsilon_values()
    step_sizes = jnp.asarray(_step_sizes(epsilon_values, config, options.step_size, options.step_size_factor))
    epsilon_values = jnp.asarray(epsilon_values)
    images = to_unit_interval(images)
    labels = np.asarray(labels)
    if labels.shape != images.shape[:1] or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers of shape [{images.shape[0]}]; got {labels.dtype} {labels.shape}")
    if options.batch_size < 1:
        raise ValueError(f"batch_size must be positive; got {options.batch_size}")
    key = jax.random.key(0) if options.key is None else options.key
    model = jittable(logits_fn)
    batch_size = min(options.batch_size, max(len(images), 1))
    for index, (start, valid) in enumerate(padded_batches(len(images), batch_size)):
        batch_images = pad_to(images[start:start + valid], batch_size)
        batch_labels = pad_to(labels[start:start + valid].astype(np.int32), batch_size)
        result = _attack_batch(model, jnp.asarray(batch_images), jnp.asarray(batch_labels), epsilon_values,
                               step_sizes, jax.random.fold_in(key, index), config=config)
        yield {"start": start, "clean": result["clean"][:valid], "labels": jnp.asarray(batch_labels[:valid]),
               "adversarial": result["adversarial"][:, :valid], "fooled": result["fooled"][:, :valid],
               "loss": result["loss"][:, :valid], "clean_fooled": result["clean_fooled"][:valid]}


def adversarial_batches(logits_fn: LogitsFn, images: Any, labels: Any, **options: Any) -> Iterator[dict[str, Any]]:
    """Attacks a data set batch by batch: images [N, ...], labels [N]; ``options`` are the fields of `AttackOptions`
    (the keyword arguments of `attack_batch`, plus ``batch_size``).

    Yields, per batch of ``b <= batch_size`` examples (padding removed): "start" (index of the first example),
    "clean" float32 [b, ...], "labels" [b], "adversarial" [E, b, ...], "fooled" and "loss" [E, b], "clean_fooled"
    [b] (device arrays, except "start"). The random start of batch i uses ``jax.random.fold_in(key, i)``.
    """
    return _attacked_batches(logits_fn, images, labels, AttackOptions(**options))


def adversarial_examples(logits_fn: LogitsFn, images: Any, labels: Any, **options: Any) -> dict[str, np.ndarray]:
    """All adversarial examples of a data set on the host (``options``: the fields of `AttackOptions`).

    Returns "adversarial" float32 [E, N, ...] (E x the data set's float32 size: for large sets iterate over
    `adversarial_batches` instead), "fooled" bool [E, N], "clean_fooled" bool [N], "epsilons" [E].
    """
    bound = AttackOptions(**options)
    batches = list(_attacked_batches(logits_fn, images, labels, bound))
    epsilons = bound.epsilon_values()
    if not batches:
        raise ValueError("no examples to attack")
    return {"adversarial": np.concatenate([np.asarray(b["adversarial"]) for b in batches], axis=1),
            "fooled": np.concatenate([np.asarray(b["fooled"]) for b in batches], axis=1),
            "clean_fooled": np.concatenate([np.asarray(b["clean_fooled"]) for b in batches]),
            "epsilons": epsilons}


def adversarial_accuracy(logits_fn: LogitsFn, images: Any, labels: Any, **options: Any) -> dict[str, Any]:
    """Accuracy under attack at every epsilon over a data set: images [N, ...], labels [N]; ``options`` are the
    fields of `AttackOptions` (the keyword arguments of `attack_batch`, plus ``batch_size``).

    Returns a JSON-ready dict: "accuracy" [E] (fraction of examples still classified correctly), "clean_accuracy",
    "epsilons" [E], "step_sizes" [E], "attack", "norm", "steps", "random_start", "num_examples".
    """
    bound = AttackOptions(**options)
    config = bound.config()
    epsilon_values = bound.epsilon_values()
    correct = np.zeros(epsilon_values.shape, np.int64)
    clean_correct, count = 0, 0
    for batch in _attacked_batches(logits_fn, images, labels, bound):
        correct += np.sum(~np.asarray(batch["fooled"]), axis=1)
        clean_correct += int(np.sum(~np.asarray(batch["clean_fooled"])))
        count += int(batch["clean_fooled"].shape[0])
    if count == 0:
        raise ValueError("no examples to attack")
    return {"attack": config.attack, "norm": config.norm, "steps": config.steps, "random_start": config.random_start,
            "epsilons": [float(e) for e in epsilon_values], "step_sizes": [float(s) for s in bound.step_sizes()],
            "accuracy": [float(c) / count for c in correct], "clean_accuracy": clean_correct / count,
            "num_examples": count}
