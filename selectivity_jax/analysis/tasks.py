"""The analyses a command can ask for by name: how each one is computed on a run (from its `RunContext` and the
settings of configs/analysis.py) and compared across a sweep. The math lives in the analysis modules; figures in
`selectivity_jax.report.analysis_figures`."""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from selectivity_jax.analysis import ablation
from selectivity_jax.analysis.pipeline import Analysis, RunContext, by_alpha
from selectivity_jax.report.tables import markdown_table


def _pm(stat: dict[str, float], digits: int = 3) -> str:
    """'mean ± std' of a `_mean_std` dict."""
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def _mean_std(values: list[float]) -> dict[str, float]:
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "n": len(values)}


# ----------------------------------------------------------------------------------------------------------------------
# ablation
# ----------------------------------------------------------------------------------------------------------------------

def compute_ablation(context: RunContext, config: ml_collections.ConfigDict) -> dict[str, Any]:
    settings = config.ablation
    images, labels = context.data
    layers = {}
    for layer in context.layers:
        context.log(f"    ablation of {layer} ({context.responses[layer].shape[1]} units)")
        layers[layer] = ablation.layer_ablation(
            context.run.logits, layer, context.selectivity[layer], context.responses[layer], images, labels,
            fill=settings.fill, num_points=settings.num_points, single_units=settings.single_units, seed=config.seed,
            batch_size=config.batch_size, masks_per_call=settings.masks_per_call)
        layers[layer]["selectivity"] = context.selectivity[layer].tolist()
    return {"layers": layers, "summary": ablation.summarize_ablation(layers)}


def compare_ablation(per_run: list[dict[str, Any]], config: ml_collections.ConfigDict) -> dict[str, Any]:
    del config
    rows = []
    for alpha, results in by_alpha(per_run).items():
        row = {"alpha": alpha, "seeds": [r["seed"] for r in results],
               "test_selectivity": _mean_std([r["test_selectivity"] for r in results])}
        for key in results[0]["summary"]:
            row[key] = _mean_std([r["summary"][key] for r in results])
        layers = list(results[0]["layers"])
        row["curves"] = {layer: {order: np.mean([r["layers"][layer][f"accuracy_{order}"] for r in results],
                                                axis=0).tolist() for order in ablation.ORDERS}
                         for layer in layers}
        row["counts"] = {layer: results[0]["layers"][layer]["counts"] for layer in layers}
        rows.append(row)
    return {"analysis": "ablation", "alphas": rows, "layers": list(per_run[0]["layers"])}


def ablation_run_table(result: dict[str, Any]) -> str:
    rows = [[f"`{name}`", str(layer["num_units"]), f"{layer['clean_accuracy']:.3f}",
             *(f"{ablation.area_under_curve(layer['counts'], layer[f'accuracy_{o}']):.3f}" for o in ablation.ORDERS),
             f"{layer.get('spearman', float('nan')):.2f}"] for name, layer in result["layers"].items()]
    return markdown_table(["layer", "units", "accuracy", "AUC most selective first", "AUC least selective first",
                           "AUC random", "Spearman ρ (selectivity, drop)"], rows)


def ablation_sweep_table(comparison: dict[str, Any]) -> str:
    rows = [[f"{row['alpha']:g}", str(len(row["seeds"])), _pm(row["test_selectivity"]),
             *(_pm(row[f"auc_{o}"]) for o in ablation.ORDERS), _pm(row["mean_spearman"], 2)]
            for row in comparison["alphas"]]
    return ("Mean accuracy over the ablated fraction of each layer's units (area under the curve), averaged over "
            "layers; mean ± std over seeds.\n\n" +
            markdown_table(["alpha", "n", "test selectivity", "AUC most selective first", "AUC least selective first",
                            "AUC random", "Spearman ρ"], rows))


def _figures(module_function: str):
    """A figure function of `selectivity_jax.report.analysis_figures`, imported when called (matplotlib)."""
    def draw(result):
        from selectivity_jax.report import analysis_figures
        return getattr(analysis_figures, module_function)(result)
    return draw


ANALYSES: dict[str, Analysis] = {
    "ablation": Analysis("ablation", compute_ablation, _figures("ablation_run_figures"), compare_ablation,
                         _figures("ablation_sweep_figures"), title="Unit ablation (Morcos et al. 2018)",
                         run_table=ablation_run_table, sweep_table=ablation_sweep_table),
}


def get_analyses(names: list[str] | tuple[str, ...] | str) -> list[Analysis]:
    """Analyses by name (a list or a comma-separated string), in the order given; a clear error for unknown names."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in ANALYSES]
    if unknown or not names:
        raise ValueError(f"unknown analyses {unknown}; known: {', '.join(ANALYSES)}")
    return [ANALYSES[n] for n in names]
