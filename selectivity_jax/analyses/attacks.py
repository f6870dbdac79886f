"""Accuracy under white-box attacks, the worst case (Leavitt & Morcos, "Linking average- and worst-case
perturbation robustness via class selectivity and dimensionality").

FGSM per threat model (L-inf, L2) and PGD per threat model and number of steps, each a curve of accuracy against
the budget eps, eps = 0 (the clean accuracy) first; budgets are in pixel units of images in [0, 1]. Resumable per
curve through ``<run>/analysis/attacks.partial.json``. Math: `selectivity_jax.measures.attacks`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np

from selectivity_jax.analyses.base import (AlphaStats, Analysis, RunContext, RunResult, by_alpha, evaluate, per_alpha,
                                           resumable_items)
from selectivity_jax.measures import attacks as attack_lib
from selectivity_jax.measures.attacks import NORM_LABELS, epsilon_label
from selectivity_jax.records import CurveStat, Record, curve_stat
from selectivity_jax.report.figures import alpha_colorbar, alpha_colors, new_figure, panels, run_title
from selectivity_jax.report.tables import markdown_table

NORM_ORDER = ("linf", "l2")  # the order of the tables and panels


@dataclasses.dataclass(frozen=True)
class AttackSpec:
    """What one curve attacks with (the keyword arguments of `attack_lib.adversarial_accuracy`)."""
    attack: str
    norm: str
    epsilons: list[float]  # 0 (the clean point) first, then the budgets, ascending
    steps: int             # PGD iterations (1 for FGSM)
    step_size_factor: float
    random_start: bool


@dataclasses.dataclass(frozen=True)
class AttackCurve(Record):
    """One curve's attack and budgets, as attacked (what the runs of a sweep share)."""
    attack: str
    norm: str
    steps: int
    random_start: bool
    epsilons: list[float]    # 0 first; the budgets as float32 rounds them
    step_sizes: list[float]  # PGD step per epsilon (0 at eps = 0)


@dataclasses.dataclass(frozen=True)
class CurveResult(AttackCurve):
    accuracy: list[float]  # per epsilon; at eps = 0 the clean accuracy
    clean_accuracy: float
    num_examples: int

    def curve(self) -> AttackCurve:
        """The attack and budgets without the accuracies."""
        return AttackCurve(**{field.name: getattr(self, field.name) for field in dataclasses.fields(AttackCurve)})


@dataclasses.dataclass(frozen=True)
class AttacksResult(Record):
    clean_accuracy: float
    num_examples: int
    curves: dict[str, CurveResult]
    curve_names: list[str]  # the curves in `attack_curves` order


@dataclasses.dataclass(frozen=True)
class AttacksAlpha(Record):
    stats: AlphaStats              # seeds, test selectivity and clean accuracy over seeds
    curves: dict[str, CurveStat]   # accuracy per epsilon of each curve, over seeds


@dataclasses.dataclass(frozen=True)
class AttacksComparison(Record):
    alphas: list[AttacksAlpha]
    curves: dict[str, AttackCurve]
    curve_names: list[str]


def attack_curves(settings: ml_collections.ConfigDict) -> dict[str, AttackSpec]:
    """{curve key: `AttackSpec`}: FGSM per norm ('fgsm_linf'), PGD per norm and number of steps ('pgd10_linf'); the
    epsilons of each norm with 0 (the clean point) first."""
    curves = {}
    for norm in settings.norms:
        epsilons = sorted({0.0, *(float(e) for e in settings[f"{norm}_epsilons"])})
        for attack in settings.attacks:
            for steps in (settings.pgd_steps if attack == "pgd" else (1,)):
                key = f"pgd{steps}_{norm}" if attack == "pgd" else f"fgsm_{norm}"
                curves[key] = AttackSpec(attack=attack, norm=norm, epsilons=epsilons, steps=int(steps),
                                         step_size_factor=float(settings.step_size_factor),
                                         random_start=bool(settings.random_start))
    return curves


def curve_label(curve: AttackCurve | AttackSpec) -> str:
    """'PGD-10 L-inf', 'FGSM L2', ..."""
    norm = NORM_LABELS[curve.norm]
    return f"PGD-{curve.steps} {norm}" if curve.attack == "pgd" else f"FGSM {norm}"


def attack_curve(logits_fn: jax.tree_util.Partial, images: np.ndarray, labels: np.ndarray, spec: AttackSpec,
                 key: jax.Array | None, batch_size: int) -> CurveResult:
    """`adversarial_accuracy` at the curve's epsilons above 0; at eps = 0 (first) the clean accuracy, which is what
    any attack returns there (the ball is the clean input), read from the same attack pass."""
    attacked = [e for e in spec.epsilons if e > 0]
    if not attacked:
        clean = float(np.mean(np.argmax(evaluate(logits_fn, images, batch_size), axis=-1) == labels))
        return CurveResult(attack=spec.attack, norm=spec.norm, steps=spec.steps, random_start=spec.random_start,
                           epsilons=[0.0], step_sizes=[0.0], accuracy=[clean], clean_accuracy=clean,
                           num_examples=int(len(labels)))
    result = attack_lib.adversarial_accuracy(logits_fn, images, labels, attack=spec.attack, norm=spec.norm,
                                             epsilons=attacked, steps=spec.steps,
                                             step_size_factor=spec.step_size_factor,
                                             random_start=spec.random_start, key=key, batch_size=batch_size)
    zero = [0.0] if len(attacked) < len(spec.epsilons) else []
    return CurveResult(attack=result["attack"], norm=result["norm"], steps=result["steps"],
                       random_start=result["random_start"], epsilons=zero + result["epsilons"],
                       step_sizes=zero + result["step_sizes"],
                       accuracy=[result["clean_accuracy"]] * len(zero) + result["accuracy"],
                       clean_accuracy=result["clean_accuracy"], num_examples=result["num_examples"])


def _epsilon_axis(ax, norm: str) -> None:
    ax.set_xlabel("ε (× 1/255, L-inf)" if norm == "linf" else "ε (L2, pixels in [0, 1])")
    ax.grid(alpha=0.3)


def _epsilon_values(epsilons: Sequence[float], norm: str) -> np.ndarray:
    """Budgets on the x axis: in units of 1/255 for L-inf."""
    return np.asarray(epsilons) * (255.0 if norm == "linf" else 1.0)


class Attacks(Analysis[AttacksResult, AttacksComparison]):
    name = "attacks"
    title = "Adversarial robustness (worst case)"
    result_type = AttacksResult
    comparison_type = AttacksComparison

    def default_settings(self) -> ml_collections.ConfigDict:
        settings = ml_collections.ConfigDict()
        settings.attacks = ("fgsm", "pgd")  # Attacks run.
        settings.norms = ("linf", "l2")     # Threat models, each with its own budgets below.
        settings.linf_epsilons = (1 / 255, 2 / 255, 4 / 255, 8 / 255)  # L-inf budgets.
        settings.l2_epsilons = (0.125, 0.25, 0.5, 1.0)  # L2 budgets (our choice for 32x32x3 and 64x64x3 images).
        settings.pgd_steps = (10, 40)       # PGD iterations: one curve per value.
        settings.step_size_factor = 2.5     # PGD step = factor * eps / steps, so the path can cross the ball.
        settings.random_start = True        # PGD starts at a uniform random point of the eps-ball (drawn by seed).
        return settings

    def check(self, settings: ml_collections.ConfigDict) -> None:
        for field, values, known in (("attacks", settings.attacks, attack_lib.ATTACKS),
                                     ("norms", settings.norms, attack_lib.NORMS)):
            if not values or any(v not in known for v in values):
                raise ValueError(f"attacks.{field} must be a non-empty selection of {known}; got {tuple(values)}")
        for norm in settings.norms:
            if any(not np.isfinite(e) or e < 0 for e in settings[f"{norm}_epsilons"]):
                raise ValueError(f"attacks.{norm}_epsilons must be finite and >= 0")
        if "pgd" in settings.attacks:
            steps = settings.pgd_steps
            if not steps or any(int(s) != s or s < 1 for s in steps):
                raise ValueError(f"attacks.pgd_steps must be positive integers; got {tuple(steps)}")
            if not (np.isfinite(settings.step_size_factor) and settings.step_size_factor > 0):
                raise ValueError(f"attacks.step_size_factor must be finite and > 0; got {settings.step_size_factor}")

    def run(self, context: RunContext, settings: ml_collections.ConfigDict) -> AttacksResult:
        images, labels = context.data
        specs = attack_curves(settings)

        def one(key: str) -> dict[str, Any]:
            return attack_curve(context.run.logits_fn, images, labels, specs[key], jax.random.key(context.seed),
                                context.batch_size).to_json()

        items = resumable_items(context, self.name, settings, list(specs), one,
                                lambda item: "accuracy " + ", ".join(f"{a:.3f}" for a in item["accuracy"]))
        curves = {key: CurveResult.from_json(item) for key, item in items.items()}
        return AttacksResult(clean_accuracy=curves[next(iter(curves))].clean_accuracy, num_examples=int(len(labels)),
                             curves=curves, curve_names=list(curves))

    def compare(self, results: Sequence[RunResult[AttacksResult]], settings: ml_collections.ConfigDict
                ) -> AttacksComparison:
        names = results[0].result.curve_names
        stats = per_alpha(results, lambda r: {"clean_accuracy": r.result.clean_accuracy})
        curves = [{key: curve_stat([r.result.curves[key].accuracy for r in group]) for key in names}
                  for group in by_alpha(results).values()]
        return AttacksComparison(alphas=[AttacksAlpha(row, per_curve) for row, per_curve in zip(stats, curves)],
                                 curves={key: results[0].result.curves[key].curve() for key in names},
                                 curve_names=names)

    def run_table(self, result: RunResult[AttacksResult]) -> str:
        record = result.result
        lines = [f"Accuracy under attack on {record.num_examples} test examples (eps = 0: clean accuracy).", ""]
        for norm in NORM_ORDER:
            curves = [record.curves[key] for key in record.curve_names if record.curves[key].norm == norm]
            if not curves:
                continue
            rows = [[curve_label(c), *(f"{a:.3f}" for a in c.accuracy)] for c in curves]
            lines += [markdown_table(["attack", *(f"ε = {epsilon_label(e, norm)}" for e in curves[0].epsilons)],
                                     rows), ""]
        return "\n".join(lines).rstrip()

    def sweep_table(self, comparison: AttacksComparison) -> str:
        lines = ["Accuracy under attack, mean ± std over seeds (eps = 0: clean accuracy).", ""]
        for key in comparison.curve_names:
            curve = comparison.curves[key]
            rows = [[f"{row.stats.alpha:g}", str(len(row.stats.seeds)),
                     *(f"{m:.3f} ± {s:.3f}" for m, s in zip(row.curves[key].mean, row.curves[key].std))]
                    for row in comparison.alphas]
            lines += [f"**{curve_label(curve)}**", "",
                      markdown_table(["alpha", "n", *(f"ε = {epsilon_label(e, curve.norm)}" for e in curve.epsilons)],
                                     rows), ""]
        return "\n".join(lines).rstrip()

    def run_figures(self, result: RunResult[AttacksResult]) -> dict[str, Any]:
        """'accuracy_vs_epsilon': one panel per norm, one line per attack."""
        record = result.result
        curves = [record.curves[key] for key in record.curve_names]
        norms = [norm for norm in NORM_ORDER if any(c.norm == norm for c in curves)]
        fig, axes = panels(len(norms), width=4.2, height=3.2)
        for ax, norm in zip(axes, norms):
            for index, curve in enumerate(c for c in curves if c.norm == norm):
                ax.plot(_epsilon_values(curve.epsilons, norm), curve.accuracy, "-o", markersize=3, color=f"C{index}",
                        label=curve_label(curve))
            _epsilon_axis(ax, norm)
            ax.set(ylabel="accuracy under attack", ylim=(0, 1.02))
            ax.legend(fontsize=7)
        fig.suptitle(run_title(result.alpha, result.seed, "White-box attacks"), fontsize=10)
        return {"accuracy_vs_epsilon": fig}

    def sweep_figures(self, comparison: AttacksComparison) -> dict[str, Any]:
        """'accuracy_vs_epsilon': one panel per attack (columns) and norm (rows), one line per alpha (mean ± std
        over seeds)."""
        alphas = [row.stats.alpha for row in comparison.alphas]
        norm_of_alpha, cmap = alpha_colors(alphas)
        by_norm: dict[str, list[str]] = {}
        for key in comparison.curve_names:
            by_norm.setdefault(comparison.curves[key].norm, []).append(key)
        columns = max(len(keys) for keys in by_norm.values())
        fig = new_figure(3.6 * columns + 1.0, 3.0 * len(by_norm))
        grid = fig.subplots(len(by_norm), columns, squeeze=False)
        for r, keys in enumerate(by_norm.values()):
            for ax in grid[r, len(keys):]:
                ax.set_visible(False)
        chosen = [(grid[r, c], key) for r, keys in enumerate(by_norm.values()) for c, key in enumerate(keys)]
        for ax, key in chosen:
            curve = comparison.curves[key]
            x = _epsilon_values(curve.epsilons, curve.norm)
            for row in comparison.alphas:
                ax.errorbar(x, row.curves[key].mean, yerr=row.curves[key].std, fmt="-o", markersize=3, capsize=2,
                            color=cmap(norm_of_alpha(row.stats.alpha)))
            _epsilon_axis(ax, curve.norm)
            ax.set(title=curve_label(curve), ylabel="accuracy under attack", ylim=(0, 1.02))
        alpha_colorbar(fig, [ax for ax, _ in chosen], alphas)
        fig.suptitle("Accuracy under attack vs ε, one line per α (mean ± std over seeds)", fontsize=10)
        return {"accuracy_vs_epsilon": fig}


ANALYSIS = Attacks()
