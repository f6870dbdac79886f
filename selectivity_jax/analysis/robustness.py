"""Robustness analyses of trained runs (Leavitt & Morcos, "Linking average- and worst-case perturbation robustness
via class selectivity and dimensionality"), declared for `selectivity_jax.analysis.pipeline`:

- ``corruptions`` (average case): accuracy on every corruption x severity of the corrupted test set (official when
  present, else generated; the source is recorded per corruption), means per family and overall, and relative to
  clean accuracy. Resumable per (corruption, severity) through ``analysis/corruptions.partial.json``.
- ``attacks`` (worst case): accuracy under FGSM and PGD (L-inf, L2) per epsilon, eps = 0 (clean) included.
  Resumable per attack curve through ``analysis/attacks.partial.json``.
- ``gradients``: variability of input-unit gradients per layer (`selectivity_jax.analysis.gradients`), with the
  layer's selectivity, for "variability vs selectivity".
- ``dimensionality``: per layer, PCA dimensionality of the clean representation and of its change under corruptions
  and under PGD (`selectivity_jax.analysis.dimensionality`); unit responses are spatial means, as in the
  selectivity index.

All run on the `RunContext` data: the class-balanced test subset shared by every run of a sweep. Corrupted splits
are restricted to the same examples by the same `subset` call on the corrupted arrays (it depends on the labels
only). Results are JSON written with sorted keys, so each lists its orders: ``layer_names`` (forward order),
``corruption_names`` and ``family_names`` (Hendrycks' order), ``curve_names``. Models enter jitted code as the
run's pytree functions (``run.logits_fn``, ``responses_fn``, ``units_fn``), so every run of a sweep shares the
compiled programs (on the tiny sweep on CPU, PGD through a closure over ``run.logits`` cost ~8 s of compilation per
run; through the pytree function 8 s for the first run and 0.5 s in all for each later one).

``run_robustness`` runs the chosen analyses and writes ``<run>/robustness.json`` ({analysis: result}) per run and,
for a sweep, ``<sweep>/robustness.json`` ({analysis: comparison}); figures in
`selectivity_jax.report.robustness_figures`.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import ml_collections
import numpy as np

from selectivity_jax.analysis import attacks as attack_lib
from selectivity_jax.analysis.dimensionality import dimensionality as pca_dimensionality
from selectivity_jax.analysis.gradients import gradient_variability
from selectivity_jax.analysis.pipeline import (ANALYSIS_DIR, Analysis, RunContext, analysis_locks, analysis_settings,
                                               by_alpha, find_runs, format_stat, run_analyses, seed_stat)
from selectivity_jax.analysis.trained import TrainedRun, batched, read_run_config
from selectivity_jax.data import corrupted as corrupted_lib
from selectivity_jax.data.corruptions import CORRUPTIONS, FAMILIES
from selectivity_jax.data.splits import subset
from selectivity_jax.report.tables import markdown_table
from selectivity_jax.train.metrics import to_jsonable, write_json

ROBUSTNESS_FILE = "robustness.json"
# Families of the official-only corruptions, as Hendrycks & Dietterich group them (FAMILIES covers the generated).
OFFICIAL_ONLY_FAMILIES = {"frost": "weather", "spatter": "weather"}
FAMILY_ORDER = ("noise", "blur", "weather", "digital", "other")
NORM_LABELS = {"linf": "L-inf", "l2": "L2"}
DIMENSIONALITY_KINDS = ("clean", "corruption", "adversarial")
GRADIENT_STATISTICS = ("norm_cv_over_samples", "norm_cv_over_units", "cosine_distance_over_samples",
                       "cosine_distance_over_units")


def family_of(corruption: str) -> str:
    """Hendrycks & Dietterich's family of a corruption: noise, blur, weather or digital ('other' if unknown)."""
    return FAMILIES.get(corruption) or OFFICIAL_ONLY_FAMILIES.get(corruption, "other")


def _stat_lists(curves: Sequence[Sequence[float]]) -> dict[str, list[float]]:
    """Element-wise {'mean': [...], 'std': [...]} over seeds of equally long curves."""
    stats = [seed_stat(column) for column in zip(*curves)]
    return {"mean": [s["mean"] for s in stats], "std": [s["std"] for s in stats]}


# ----------------------------------------------------------------------------------------------------------------------
# the model as a pytree function, evaluation, resumable items
# ----------------------------------------------------------------------------------------------------------------------

def _on_host(images: np.ndarray) -> np.ndarray:
    """Pixels in [0, 1] as float32, scaled on the host as the attacks scale them, so that clean accuracies computed
    here and by the attacks see the same inputs."""
    return attack_lib.to_unit_interval(images)


def evaluate(fn: jax.tree_util.Partial, images: np.ndarray, batch_size: int) -> Any:
    """`batched` ``fn`` (a `TrainedRun` pytree function: compiled once per sweep) on host-scaled images."""
    return batched(fn, _on_host(images), min(batch_size, len(images)))


def accuracy(run: TrainedRun, images: np.ndarray, labels: np.ndarray, batch_size: int) -> float:
    """Top-1 accuracy of the run on (images, labels)."""
    logits = evaluate(run.logits_fn, images, batch_size)
    return float(np.mean(np.argmax(logits, axis=-1) == np.asarray(labels)))


def partial_path(run_dir: str, name: str) -> str:
    """Where analysis ``name`` keeps its finished items while it runs: ``<run>/analysis/<name>.partial.json``."""
    return os.path.join(run_dir, ANALYSIS_DIR, f"{name}.partial.json")


def resumable_items(context: RunContext, config: ml_collections.ConfigDict, name: str, keys: Sequence[str],
                    compute_item: Callable[[str], dict[str, Any]], describe: Callable[[dict[str, Any]], str]
                    ) -> dict[str, dict[str, Any]]:
    """``{key: compute_item(key)}``, each item saved to `partial_path` as soon as it is done and read back from
    there (when the analysis' settings are unchanged) instead of computed again; progress is logged per item."""
    path = partial_path(context.run_dir, name)
    settings = analysis_settings(config, name)
    done: dict[str, dict[str, Any]] = {}
    if os.path.exists(path):
        with open(path) as f:
            stored = json.load(f)
        if stored.get("settings") == settings:
            done = stored["items"]
    resumed = [key for key in keys if key in done]
    if resumed:
        context.log(f"    {name}: {len(resumed)}/{len(keys)} done before, read from {path}")
    for index, key in enumerate(keys):
        if key in done:
            continue
        start = time.time()
        done[key] = to_jsonable(compute_item(key))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_json(path, {"settings": settings, "items": done})
        context.log(f"    {name} {index + 1}/{len(keys)} {key}: {describe(done[key])} ({time.time() - start:.1f}s)")
    return {key: done[key] for key in keys}


# ----------------------------------------------------------------------------------------------------------------------
# corruptions
# ----------------------------------------------------------------------------------------------------------------------

def corrupted_subset(context: RunContext, corruption: str, severity: int, source: str
                     ) -> tuple[np.ndarray, np.ndarray, corrupted_lib.CorruptedSplit]:
    """(images, labels, split) of one corruption, restricted to the examples of ``context.data``.

    `corrupted_split` aligns example i with clean test example i; `subset` picks examples from the labels alone, so
    the same call as the one that made ``context.data`` picks the corruptions of the same examples (checked)."""
    split = corrupted_lib.corrupted_split(context.run.config.data, corruption, severity, source=source)
    if not np.array_equal(split.labels, context.run.splits.test[1]):
        raise ValueError(f"{corruption} (severity {severity}, {split.source}: {split.origin}) is not aligned with the "
                         "run's test split: its labels differ")
    images, labels = subset(split.images, split.labels, context.config.num_examples, context.config.seed)
    if not np.array_equal(labels, context.data[1]):
        raise ValueError(f"the {corruption} subset does not pick the examples of the clean subset")
    return images, labels, split


def corruption_names(run_dir: str, settings: ml_collections.ConfigDict) -> list[str]:
    """``settings.names`` (Hendrycks' names), or every corruption available for the run's data set."""
    if settings.names:
        return [corrupted_lib.canonical_corruption(name) for name in settings.names]
    return list(corrupted_lib.available_corruptions(read_run_config(run_dir).data, settings.source))


def summarize_corruptions(clean_accuracy: float, severities: Sequence[int],
                          corruptions: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Means of per-corruption accuracies [per severity]: per family and severity, per family, per severity and
    overall (each corruption x severity counts once), and the overall mean relative to clean accuracy."""
    families: dict[str, list[str]] = {}
    for name in corruptions:
        families.setdefault(family_of(name), []).append(name)
    families = {family: families[family] for family in FAMILY_ORDER if family in families}
    table = np.array([corruptions[name]["accuracy"] for name in corruptions], np.float64)  # [C, S]
    mean = float(table.mean())
    return {
        "family_names": list(families),
        "families": {family: {"corruptions": names,
                              "accuracy": np.mean([corruptions[n]["accuracy"] for n in names], axis=0).tolist(),
                              "mean": float(np.mean([corruptions[n]["accuracy"] for n in names]))}
                     for family, names in families.items()},
        "accuracy_by_severity": table.mean(axis=0).tolist(),
        "mean_accuracy": mean,
        "relative_accuracy": mean / clean_accuracy if clean_accuracy > 0 else float("nan"),
        "severities": list(severities),
        "sources": {source: [n for n, c in corruptions.items() if c["source"] == source]
                    for source in sorted({c["source"] for c in corruptions.values()})},
    }


def compute_corruptions(context: RunContext, config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Accuracy on every corruption x severity of the test subset (Leavitt & Morcos, average-case robustness)."""
    settings = config.corruptions
    names = corruption_names(context.run_dir, settings)
    pairs = {f"{name}/{severity}": (name, int(severity)) for name in names for severity in settings.severities}

    def one(key: str) -> dict[str, Any]:
        if key == "clean":
            return {"accuracy": accuracy(context.run, *context.data, config.batch_size), "source": "clean",
                    "num_examples": len(context.data[1])}
        name, severity = pairs[key]
        corrupted_images, corrupted_labels, split = corrupted_subset(context, name, severity, settings.source)
        return {"accuracy": accuracy(context.run, corrupted_images, corrupted_labels, config.batch_size),
                "source": split.source, "origin": split.origin}

    context.log(f"    {len(names)} corruptions x {len(settings.severities)} severities")
    items = resumable_items(context, config, "corruptions", ["clean", *pairs], one,
                            lambda item: f"accuracy {item['accuracy']:.3f} ({item['source']})")
    clean = items["clean"]
    corruptions = {}
    for name in names:
        per_severity = [items[f"{name}/{severity}"] for severity in settings.severities]
        sources = sorted({item["source"] for item in per_severity})
        corruptions[name] = {"family": family_of(name), "source": "+".join(sources),
                             "origin": per_severity[-1]["origin"],
                             "accuracy": [item["accuracy"] for item in per_severity],
                             "mean": float(np.mean([item["accuracy"] for item in per_severity]))}
    return {"clean_accuracy": clean["accuracy"], "num_examples": clean["num_examples"], "corruptions": corruptions,
            "corruption_names": names, **summarize_corruptions(clean["accuracy"], settings.severities, corruptions)}


def compare_corruptions(per_run: list[dict[str, Any]], config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Per alpha, mean ± std over seeds of clean, mean and relative corrupted accuracy, per family (and severity)
    and per corruption."""
    del config
    rows = []
    for alpha, results in by_alpha(per_run).items():
        first = results[0]
        rows.append({
            "alpha": alpha, "seeds": [r["seed"] for r in results],
            "test_selectivity": seed_stat([r["test_selectivity"] for r in results]),
            **{key: seed_stat([r[key] for r in results])
               for key in ("clean_accuracy", "mean_accuracy", "relative_accuracy")},
            "accuracy_by_severity": _stat_lists([r["accuracy_by_severity"] for r in results]),
            "families": {family: {"mean": seed_stat([r["families"][family]["mean"] for r in results]),
                                  "accuracy": _stat_lists([r["families"][family]["accuracy"] for r in results])}
                         for family in first["family_names"]},
            "corruptions": {name: {"mean": seed_stat([r["corruptions"][name]["mean"] for r in results]),
                                   "accuracy": _stat_lists([r["corruptions"][name]["accuracy"] for r in results])}
                            for name in first["corruption_names"]},
        })
    first = per_run[0]
    sources = {}
    for result in per_run:
        for name, corruption in result["corruptions"].items():
            sources.setdefault(name, set()).add(corruption["source"])
    return {"analysis": "corruptions", "alphas": rows, "severities": first["severities"],
            "family_names": first["family_names"], "corruption_names": first["corruption_names"],
            "families": {family: first["families"][family]["corruptions"] for family in first["family_names"]},
            "sources": {name: "+".join(sorted(found)) for name, found in sources.items()}}


def sources_note(sources: Mapping[str, str]) -> str:
    """One sentence naming where the corrupted images came from (official sets vs our generator)."""
    by_source: dict[str, list[str]] = {}
    for name, source in sources.items():
        by_source.setdefault(source, []).append(name)
    parts = [f"{source} ({', '.join(names)})" if len(by_source) > 1 else source
             for source, names in sorted(by_source.items())]
    generated = " Generated = made by selectivity_jax.data.corruptions, not the released benchmark." \
        if any("generated" in s for s in by_source) else ""
    return f"Corrupted images: {'; '.join(parts)}.{generated}"


def corruptions_run_table(result: dict[str, Any]) -> str:
    severities = result["severities"]
    corruptions, families = result["corruptions"], result["families"]
    rows = [[f"{name} ({corruptions[name]['family']})", *(f"{a:.3f}" for a in corruptions[name]["accuracy"]),
             f"{corruptions[name]['mean']:.3f}"] for name in result["corruption_names"]]
    rows += [[f"**{family}**", *(f"{a:.3f}" for a in families[family]["accuracy"]), f"{families[family]['mean']:.3f}"]
             for family in result["family_names"]]
    rows.append(["**all**", *(f"{a:.3f}" for a in result["accuracy_by_severity"]), f"{result['mean_accuracy']:.3f}"])
    return (f"Clean accuracy {result['clean_accuracy']:.3f} on {result['num_examples']} test examples; mean corrupted "
            f"accuracy {result['mean_accuracy']:.3f} ({result['relative_accuracy']:.3f} of clean). "
            f"{sources_note({n: c['source'] for n, c in result['corruptions'].items()})}\n\n" +
            markdown_table(["corruption", *(f"severity {s}" for s in severities), "mean"], rows))


def corruptions_sweep_table(comparison: dict[str, Any]) -> str:
    families = comparison["family_names"]
    rows = [[f"{row['alpha']:g}", str(len(row["seeds"])), format_stat(row["test_selectivity"]),
             format_stat(row["clean_accuracy"]), format_stat(row["mean_accuracy"]),
             format_stat(row["relative_accuracy"]),
             *(format_stat(row["families"][family]["mean"]) for family in families)]
            for row in comparison["alphas"]]
    return (f"Accuracy on the corrupted test subset, mean over severities {comparison['severities']}; mean ± std over "
            f"seeds. {sources_note(comparison['sources'])}\n\n" +
            markdown_table(["alpha", "n", "test selectivity", "clean accuracy", "corrupted accuracy",
                            "corrupted / clean", *families], rows))


# ----------------------------------------------------------------------------------------------------------------------
# attacks
# ----------------------------------------------------------------------------------------------------------------------

def attack_curves(settings: ml_collections.ConfigDict) -> dict[str, dict[str, Any]]:
    """{curve key: adversarial_accuracy keyword arguments}: FGSM per norm, PGD per norm and number of steps; the
    epsilons of each norm with 0 (the clean point) first."""
    curves = {}
    for norm in settings.norms:
        epsilons = sorted({0.0, *(float(e) for e in settings[f"{norm}_epsilons"])})
        for attack in settings.attacks:
            for steps in (settings.pgd_steps if attack == "pgd" else (1,)):
                key = f"pgd{steps}_{norm}" if attack == "pgd" else f"fgsm_{norm}"
                curves[key] = {"attack": attack, "norm": norm, "epsilons": epsilons, "steps": int(steps),
                               "step_size_factor": float(settings.step_size_factor),
                               "random_start": bool(settings.random_start)}
    return curves


def curve_label(curve: Mapping[str, Any]) -> str:
    """'PGD-10 L-inf', 'FGSM L2', ..."""
    norm = NORM_LABELS[curve["norm"]]
    return f"PGD-{curve['steps']} {norm}" if curve["attack"] == "pgd" else f"FGSM {norm}"


def attack_curve(logits_fn: jax.tree_util.Partial, images: np.ndarray, labels: np.ndarray, curve: Mapping[str, Any],
                 key: jax.Array, batch_size: int) -> dict[str, Any]:
    """`adversarial_accuracy` at the curve's epsilons above 0; at eps = 0 (first) the clean accuracy, which is what
    any attack returns there (the ball is the clean input), read from the same attack pass."""
    attacked = [e for e in curve["epsilons"] if e > 0]
    if not attacked:
        clean = float(np.mean(np.argmax(evaluate(logits_fn, images, batch_size), axis=-1) == labels))
        return {**curve, "epsilons": [0.0], "accuracy": [clean], "step_sizes": [0.0], "clean_accuracy": clean,
                "num_examples": int(len(labels))}
    result = attack_lib.adversarial_accuracy(logits_fn, images, labels, **{**curve, "epsilons": attacked}, key=key,
                                             batch_size=batch_size)
    zero = [0.0] if len(attacked) < len(curve["epsilons"]) else []
    return {**result, "epsilons": zero + result["epsilons"], "step_sizes": zero + result["step_sizes"],
            "accuracy": [result["clean_accuracy"]] * len(zero) + result["accuracy"]}


def compute_attacks(context: RunContext, config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Accuracy under white-box FGSM / PGD per epsilon, eps = 0 included (Leavitt & Morcos, worst-case
    robustness)."""
    images, labels = context.data
    curves = attack_curves(config.attacks)

    def one(key: str) -> dict[str, Any]:
        return attack_curve(context.run.logits_fn, images, labels, curves[key], jax.random.key(config.seed),
                            config.batch_size)

    items = resumable_items(context, config, "attacks", list(curves), one,
                            lambda item: "accuracy " + ", ".join(f"{a:.3f}" for a in item["accuracy"]))
    return {"clean_accuracy": items[next(iter(items))]["clean_accuracy"], "num_examples": int(len(labels)),
            "curves": items, "curve_names": list(curves)}


def compare_attacks(per_run: list[dict[str, Any]], config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Per alpha, mean ± std over seeds of the accuracy at every epsilon of every curve."""
    del config
    rows = []
    for alpha, results in by_alpha(per_run).items():
        rows.append({"alpha": alpha, "seeds": [r["seed"] for r in results],
                     "test_selectivity": seed_stat([r["test_selectivity"] for r in results]),
                     "clean_accuracy": seed_stat([r["clean_accuracy"] for r in results]),
                     "curves": {key: _stat_lists([r["curves"][key]["accuracy"] for r in results])
                                for key in results[0]["curve_names"]}})
    names = per_run[0]["curve_names"]
    curves = {key: {k: v for k, v in per_run[0]["curves"][key].items()
                    if k not in ("accuracy", "clean_accuracy", "num_examples")} for key in names}
    return {"analysis": "attacks", "alphas": rows, "curves": curves, "curve_names": names}


def _epsilon_label(epsilon: float, norm: str) -> str:
    """'4/255' (L-inf), '0.5' (L2), '0'."""
    return f"{epsilon * 255:.3g}/255" if norm == "linf" and epsilon > 0 else f"{epsilon:g}"


def attacks_run_table(result: dict[str, Any]) -> str:
    lines = [f"Accuracy under attack on {result['num_examples']} test examples (eps = 0: clean accuracy).", ""]
    for norm in ("linf", "l2"):
        curves = {k: result["curves"][k] for k in result["curve_names"] if result["curves"][k]["norm"] == norm}
        if not curves:
            continue
        epsilons = next(iter(curves.values()))["epsilons"]
        rows = [[curve_label(c), *(f"{a:.3f}" for a in c["accuracy"])] for c in curves.values()]
        lines += [markdown_table(["attack", *(f"ε = {_epsilon_label(e, norm)}" for e in epsilons)], rows), ""]
    return "\n".join(lines).rstrip()


def attacks_sweep_table(comparison: dict[str, Any]) -> str:
    lines = ["Accuracy under attack, mean ± std over seeds (eps = 0: clean accuracy).", ""]
    for key in comparison["curve_names"]:
        curve = comparison["curves"][key]
        rows = [[f"{row['alpha']:g}", str(len(row["seeds"])),
                 *(f"{m:.3f} ± {s:.3f}" for m, s in zip(row["curves"][key]["mean"], row["curves"][key]["std"]))]
                for row in comparison["alphas"]]
        lines += [f"**{curve_label(curve)}**", "",
                  markdown_table(["alpha", "n", *(f"ε = {_epsilon_label(e, curve['norm'])}"
                                                  for e in curve["epsilons"])], rows), ""]
    return "\n".join(lines).rstrip()


# ----------------------------------------------------------------------------------------------------------------------
# gradients
# ----------------------------------------------------------------------------------------------------------------------

def compute_gradients(context: RunContext, config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Input-unit gradient variability per layer (Leavitt & Morcos: more variable in high-selectivity networks),
    with each layer's selectivity on the analysed subset; per-unit and per-sample values kept, the [N, K] norms
    not."""
    settings = config.gradients
    images, labels = subset(*context.data, settings.num_examples, config.seed)
    layers = {}
    for layer in context.layers:
        start = time.time()
        variability = gradient_variability(context.run.units_fn(layer), images,
                                           batch_size=min(config.batch_size, len(images)),
                                           max_units=settings.max_units or None, key=jax.random.key(config.seed),
                                           unit_chunk_size=settings.unit_chunk_size)
        variability.pop("gradient_norms")
        selectivity = context.selectivity[layer]
        layers[layer] = {**variability, "selectivity": float(np.nanmean(selectivity)),
                         "unit_selectivity": selectivity[variability["unit_indices"]]}
        context.log(f"    gradients {layer} ({variability['num_units']} units): norm CV over samples "
                    f"{variability['norm_cv_over_samples_mean']:.3f} ({time.time() - start:.1f}s)")
    summary = {f"{stat}_mean": float(np.nanmean([layer[f"{stat}_mean"] for layer in layers.values()]))
               for stat in GRADIENT_STATISTICS}
    return {"num_examples": int(len(labels)), "layers": layers, "layer_names": list(layers), "summary": summary,
            "network_selectivity": float(np.mean([layer["selectivity"] for layer in layers.values()]))}


def compare_gradients(per_run: list[dict[str, Any]], config: ml_collections.ConfigDict) -> dict[str, Any]:
    """One point per run (network selectivity, variability summaries) and per-alpha means ± std, per layer too."""
    del config
    runs = [{"alpha": r["alpha"], "seed": r["seed"], "network_selectivity": r["network_selectivity"],
             "test_selectivity": r["test_selectivity"], **r["summary"]} for r in per_run]
    layers = per_run[0]["layer_names"]
    rows = []
    for alpha, results in by_alpha(per_run).items():
        rows.append({"alpha": alpha, "seeds": [r["seed"] for r in results],
                     "network_selectivity": seed_stat([r["network_selectivity"] for r in results]),
                     **{f"{s}_mean": seed_stat([r["summary"][f"{s}_mean"] for r in results])
                        for s in GRADIENT_STATISTICS},
                     "layers": {layer: {"selectivity": seed_stat([r["layers"][layer]["selectivity"] for r in results]),
                                        **{s: seed_stat([r["layers"][layer][f"{s}_mean"] for r in results])
                                           for s in GRADIENT_STATISTICS}} for layer in layers}})
    return {"analysis": "gradients", "runs": runs, "alphas": rows, "layer_names": layers}


def gradients_run_table(result: dict[str, Any]) -> str:
    layers = result["layers"]
    rows = [[f"`{name}`", str(layers[name]["num_units"]), f"{layers[name]['selectivity']:.3f}",
             *(f"{layers[name][f'{s}_mean']:.3f}" for s in GRADIENT_STATISTICS)] for name in result["layer_names"]]
    return (f"Input-unit gradients on {result['num_examples']} test examples; NaN-ignoring means over units or "
            "samples.\n\n" +
            markdown_table(["layer", "units", "selectivity", "norm CV over samples", "norm CV over units",
                            "cosine distance over samples", "cosine distance over units"], rows))


def gradients_sweep_table(comparison: dict[str, Any]) -> str:
    rows = [[f"{row['alpha']:g}", str(len(row["seeds"])), format_stat(row["network_selectivity"]),
             *(format_stat(row[f"{s}_mean"]) for s in GRADIENT_STATISTICS)] for row in comparison["alphas"]]
    return ("Input-unit gradient variability, mean over layers; mean ± std over seeds.\n\n" +
            markdown_table(["alpha", "n", "selectivity (subset)", "norm CV over samples", "norm CV over units",
                            "cosine distance over samples", "cosine distance over units"], rows))


# ----------------------------------------------------------------------------------------------------------------------
# dimensionality
# ----------------------------------------------------------------------------------------------------------------------

def _dims(x: np.ndarray, threshold: float) -> dict[str, Any]:
    """`dimensionality` without the spectrum."""
    result = pca_dimensionality(x, threshold)
    result.pop("explained_variance_ratio")
    return result


def compute_dimensionality(context: RunContext, config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Per layer, PCA dimensionality (components for ``threshold`` of the variance, participation ratio) of the
    clean unit responses and of their change under corruptions (pooled over the chosen corruptions, and each alone)
    and under PGD (Leavitt & Morcos, dimensionality analysis)."""
    settings = config.dimensionality
    images, labels = context.data
    responses_fn = context.run.responses_fn(context.layers)
    clean = evaluate(responses_fn, images, config.batch_size)
    corruption_changes, corrupted_accuracy, sources = {}, {}, {}
    for name in (corrupted_lib.canonical_corruption(c) for c in settings.corruptions):
        corrupted_images, corrupted_labels, split = corrupted_subset(context, name, settings.severity,
                                                                     settings.source)
        perturbed = evaluate(responses_fn, corrupted_images, config.batch_size)
        corruption_changes[name] = {layer: perturbed[layer] - clean[layer] for layer in context.layers}
        corrupted_accuracy[name] = accuracy(context.run, corrupted_images, corrupted_labels, config.batch_size)
        sources[name] = split.source
    start = time.time()
    adversarial = attack_lib.adversarial_examples(
        context.run.logits_fn, images, labels, attack="pgd", norm=settings.norm, epsilons=[settings.epsilon],
        steps=settings.pgd_steps, key=jax.random.key(config.seed), batch_size=config.batch_size)
    adversarial_responses = evaluate(responses_fn, adversarial["adversarial"][0], config.batch_size)
    context.log(f"    PGD-{settings.pgd_steps} {settings.norm} eps {settings.epsilon:.4g}: accuracy "
                f"{1 - adversarial['fooled'].mean():.3f} ({time.time() - start:.1f}s)")
    layers = {}
    for layer in context.layers:
        changes = [change[layer] for change in corruption_changes.values()]
        layers[layer] = {
            "clean": _dims(clean[layer], settings.threshold),
            "corruption": _dims(np.concatenate(changes), settings.threshold) if changes else None,
            "adversarial": _dims(adversarial_responses[layer] - clean[layer], settings.threshold),
            "per_corruption": {name: _dims(change[layer], settings.threshold)
                               for name, change in corruption_changes.items()},
        }
    return {"num_examples": int(len(labels)), "threshold": float(settings.threshold), "layers": layers,
            "layer_names": list(layers), "corruptions": list(corruption_changes), "severity": int(settings.severity),
            "sources": sources, "corrupted_accuracy": corrupted_accuracy, "norm": settings.norm,
            "epsilon": float(settings.epsilon), "pgd_steps": int(settings.pgd_steps),
            "adversarial_accuracy": float(1 - adversarial["fooled"].mean())}


def compare_dimensionality(per_run: list[dict[str, Any]], config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Per alpha and layer, mean ± std over seeds of n_components and participation ratio of each kind."""
    del config
    layers = per_run[0]["layer_names"]
    kinds = [kind for kind in DIMENSIONALITY_KINDS if per_run[0]["layers"][layers[0]][kind] is not None]
    rows = []
    for alpha, results in by_alpha(per_run).items():
        rows.append({"alpha": alpha, "seeds": [r["seed"] for r in results],
                     "test_selectivity": seed_stat([r["test_selectivity"] for r in results]),
                     **{kind: {measure: {layer: seed_stat([r["layers"][layer][kind][measure] for r in results])
                                         for layer in layers}
                               for measure in ("n_components", "participation_ratio")} for kind in kinds}})
    first = per_run[0]
    return {"analysis": "dimensionality", "alphas": rows, "layer_names": layers, "kinds": kinds,
            "threshold": first["threshold"], "corruptions": first["corruptions"], "severity": first["severity"],
            "sources": first["sources"], "norm": first["norm"], "epsilon": first["epsilon"],
            "pgd_steps": first["pgd_steps"]}


def _dimensionality_note(result: Mapping[str, Any]) -> str:
    note = (f"n: PCA components for {result['threshold']:g} of the variance; PR: participation ratio. Adversarial "
            f"change: responses to PGD-{result['pgd_steps']} {NORM_LABELS[result['norm']]} examples at eps "
            f"{_epsilon_label(result['epsilon'], result['norm'])} minus clean responses.")
    if result["corruptions"]:
        note += (f" Corruption change: responses to {', '.join(result['corruptions'])} at severity "
                 f"{result['severity']} minus clean responses, pooled. {sources_note(result['sources'])}")
    return note


def dimensionality_run_table(result: dict[str, Any]) -> str:
    rows = []
    for name in result["layer_names"]:
        layer = result["layers"][name]
        rows.append([f"`{name}`", str(layer["clean"]["num_units"]),
                     *(f"{layer[k]['n_components']} / {layer[k]['participation_ratio']:.2f}" if layer[k] else "–"
                       for k in DIMENSIONALITY_KINDS)])
    return (_dimensionality_note(result) + "\n\n" +
            markdown_table(["layer", "units", "clean n / PR", "corruption change n / PR",
                            "adversarial change n / PR"], rows))


def dimensionality_sweep_table(comparison: dict[str, Any]) -> str:
    rows = []
    for layer in comparison["layer_names"]:
        rows.append([f"`{layer}`", *(" / ".join(f"{row[kind]['participation_ratio'][layer]['mean']:.2f}"
                                               for kind in comparison["kinds"]) for row in comparison["alphas"])])
    kinds = " / ".join(comparison["kinds"])
    return (_dimensionality_note(comparison) + f" Cells: participation ratio of {kinds}, mean over seeds.\n\n" +
            markdown_table(["layer", *(f"α = {row['alpha']:g}" for row in comparison["alphas"])], rows))


# ----------------------------------------------------------------------------------------------------------------------
# declarations, settings checks, the command
# ----------------------------------------------------------------------------------------------------------------------

def _figures(function_name: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A figure function of `selectivity_jax.report.robustness_figures`, imported when called (matplotlib)."""
    def draw(result: dict[str, Any]) -> dict[str, Any]:
        from selectivity_jax.report import robustness_figures
        return getattr(robustness_figures, function_name)(result)
    return draw


def _declare(name: str, compute: Callable, compare: Callable, title: str, run_table: Callable,
             sweep_table: Callable) -> Analysis:
    return Analysis(name, compute, _figures(f"{name}_run_figures"), compare, _figures(f"{name}_sweep_figures"),
                    title=title, run_table=run_table, sweep_table=sweep_table)


ROBUSTNESS_ANALYSES: dict[str, Analysis] = {
    "corruptions": _declare("corruptions", compute_corruptions, compare_corruptions,
                            "Corruption robustness (average case)", corruptions_run_table, corruptions_sweep_table),
    "attacks": _declare("attacks", compute_attacks, compare_attacks, "Adversarial robustness (worst case)",
                        attacks_run_table, attacks_sweep_table),
    "gradients": _declare("gradients", compute_gradients, compare_gradients, "Input-unit gradient variability",
                          gradients_run_table, gradients_sweep_table),
    "dimensionality": _declare("dimensionality", compute_dimensionality, compare_dimensionality,
                               "Dimensionality of representations and of their perturbations",
                               dimensionality_run_table, dimensionality_sweep_table),
}


def get_robustness_analyses(names: Sequence[str] | str | None) -> list[Analysis]:
    """Analyses by name (a list or comma-separated string; None: all four), in ``ROBUSTNESS_ANALYSES`` order."""
    if names is None:
        return list(ROBUSTNESS_ANALYSES.values())
    if isinstance(names, str):
        names = names.split(",")
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise ValueError(f"no analysis named; choose among {', '.join(ROBUSTNESS_ANALYSES)}")
    unknown = [n for n in names if n not in ROBUSTNESS_ANALYSES]
    if unknown:
        raise ValueError(f"unknown robustness analyses {unknown}; known: {', '.join(ROBUSTNESS_ANALYSES)}")
    return [analysis for name, analysis in ROBUSTNESS_ANALYSES.items() if name in names]


def _check_corruptions(names: Sequence[str], severities: Sequence[int], source: str, where: str) -> None:
    known = set(corrupted_lib.CIFAR10_C_CORRUPTIONS) | set(CORRUPTIONS)
    unknown = [n for n in names if corrupted_lib.canonical_corruption(n) not in known]
    if unknown:
        raise ValueError(f"{where}: unknown corruptions {unknown}; known: {', '.join(sorted(known))}")
    bad = [s for s in severities if s not in corrupted_lib.SEVERITIES]
    if bad:
        raise ValueError(f"{where}: severities must be among {corrupted_lib.SEVERITIES}; got {bad}")
    if source not in corrupted_lib.SOURCE_CHOICES:
        raise ValueError(f"{where}: source must be one of {corrupted_lib.SOURCE_CHOICES}; got {source!r}")


def check_settings(config: ml_collections.ConfigDict, names: Sequence[str]) -> None:
    """ValueError (one line) for settings the chosen analyses cannot run with, before any model is loaded."""
    if "corruptions" in names:
        corruptions = config.corruptions
        _check_corruptions(corruptions.names, corruptions.severities, corruptions.source, "corruptions")
        if not corruptions.severities:
            raise ValueError("corruptions.severities is empty")
    if "attacks" in names:
        attacks = config.attacks
        for field, values, known in (("attacks", attacks.attacks, attack_lib.ATTACKS),
                                     ("norms", attacks.norms, attack_lib.NORMS)):
            if not values or any(v not in known for v in values):
                raise ValueError(f"attacks.{field} must be a non-empty selection of {known}; got {tuple(values)}")
        for norm in attacks.norms:
            if any(not np.isfinite(e) or e < 0 for e in attacks[f"{norm}_epsilons"]):
                raise ValueError(f"attacks.{norm}_epsilons must be finite and >= 0")
        steps = attacks.pgd_steps
        if "pgd" in attacks.attacks and (not steps or any(int(s) != s or s < 1 for s in steps)):
            raise ValueError(f"attacks.pgd_steps must be positive integers; got {tuple(steps)}")
    if "gradients" in names and (config.gradients.max_units < 0 or config.gradients.num_examples < 0):
        raise ValueError("gradients.max_units and gradients.num_examples must be >= 0")
    if "dimensionality" in names:
        dims = config.dimensionality
        _check_corruptions(dims.corruptions, (dims.severity,), dims.source, "dimensionality")
        if dims.norm not in attack_lib.NORMS or not dims.epsilon >= 0 or dims.pgd_steps < 1:
            raise ValueError(f"dimensionality: norm must be one of {attack_lib.NORMS}, epsilon >= 0, pgd_steps >= 1")
        if not 0 < dims.threshold <= 1:
            raise ValueError(f"dimensionality.threshold must be in (0, 1]; got {dims.threshold}")


def _merge_present(directory: str) -> dict[str, Any]:
    """{analysis: the JSON ``<directory>/analysis/<analysis>.json``} for the robustness analyses found there."""
    merged = {}
    for name in ROBUSTNESS_ANALYSES:
        path = os.path.join(directory, ANALYSIS_DIR, f"{name}.json")
        if os.path.exists(path):
            with open(path) as f:
                merged[name] = json.load(f)
    return merged


def run_robustness(workdir: str, names: Sequence[str] | str | None, config: ml_collections.ConfigDict, *,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """The robustness analyses ``names`` on a run or a sweep (`run_analyses`, report ``analysis/robustness.md``),
    then ``robustness.json`` in every run ({analysis: result}, every robustness analysis done so far) and, for a
    sweep, in ``workdir`` ({analysis: comparison}). Returns `run_analyses`' dict plus 'robustness': [paths]."""
    analyses = get_robustness_analyses(names)
    if not os.path.isdir(workdir):
        raise ValueError(f"{workdir} is not a directory (expected a run or a sweep directory)")
    is_sweep, run_dirs = find_runs(workdir)
    check_settings(config, [a.name for a in analyses])
    with analysis_locks(workdir, run_dirs, log):
        outcome = run_analyses(workdir, analyses, config, report="robustness",
                               report_analyses=list(ROBUSTNESS_ANALYSES.values()), log=log, lock=False)
        paths = []
        for directory in run_dirs + ([workdir] if is_sweep else []):
            path = os.path.join(directory, ROBUSTNESS_FILE)
            write_json(path, _merge_present(directory))
            paths.append(path)
    log(f"robustness.json written in {len(paths)} director{'y' if len(paths) == 1 else 'ies'}")
    return {**outcome, "robustness": paths}
