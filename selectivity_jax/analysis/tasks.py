"""The analyses a command can ask for by name: how each one is computed on a run (from its `RunContext` and the
settings of configs/analysis.py) and compared across a sweep. The math lives in the analysis modules; figures in
`selectivity_jax.report.analysis_figures`."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from selectivity_jax.analysis import ablation, basis, feature_vis, rotation, similarity
from selectivity_jax.analysis.pipeline import ANALYSIS_DIR, Analysis, RunContext, by_alpha, format_stat, seed_stat
from selectivity_jax.analysis.trained import batched
from selectivity_jax.report.tables import markdown_table


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
            context.run.logits_fn, layer, context.selectivity[layer], context.responses[layer], images, labels,
            fill=settings.fill, num_points=settings.num_points, single_units=settings.single_units, seed=config.seed,
            batch_size=config.batch_size, masks_per_call=settings.masks_per_call)
        layers[layer]["selectivity"] = context.selectivity[layer].tolist()
    return {"layers": layers, "summary": ablation.summarize_ablation(layers)}


def compare_ablation(per_run: list[dict[str, Any]], config: ml_collections.ConfigDict) -> dict[str, Any]:
    del config
    rows = []
    for alpha, results in by_alpha(per_run).items():
        row = {"alpha": alpha, "seeds": [r["seed"] for r in results],
               "test_selectivity": seed_stat([r["test_selectivity"] for r in results])}
        for key in results[0]["summary"]:
            row[key] = seed_stat([r["summary"][key] for r in results])
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
    rows = [[f"{row['alpha']:g}", str(len(row["seeds"])), format_stat(row["test_selectivity"]),
             *(format_stat(row[f"auc_{o}"]) for o in ablation.ORDERS), format_stat(row["mean_spearman"], 2)]
            for row in comparison["alphas"]]
    return ("Mean accuracy over the ablated fraction of each layer's units (area under the curve), averaged over "
            "layers; mean ± std over seeds.\n\n" +
            markdown_table(["alpha", "n", "test selectivity", "AUC most selective first", "AUC least selective first",
                            "AUC random", "Spearman ρ"], rows))


def _per_alpha(per_run: list[dict[str, Any]], value) -> list[dict[str, Any]]:
    """One row per alpha: seeds, test selectivity and `value(result)` (a dict of numbers) as mean ± std over seeds."""
    rows = []
    for alpha, results in by_alpha(per_run).items():
        values = [value(r) for r in results]
        row = {"alpha": alpha, "seeds": [r["seed"] for r in results],
               "test_selectivity": seed_stat([r["test_selectivity"] for r in results])}
        for key in values[0]:
            row[key] = seed_stat([v[key] for v in values])
        rows.append(row)
    return rows


def _layer_means(per_run: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Per alpha: {layer: mean over seeds of ``result['layers'][layer][key]``} (a number or a list)."""
    rows = []
    for alpha, results in by_alpha(per_run).items():
        layers = list(results[0]["layers"])
        rows.append({"alpha": alpha, "layers": {
            layer: np.mean([np.asarray(r["layers"][layer][key], np.float64) for r in results], axis=0).tolist()
            for layer in layers}})
    return rows


# ----------------------------------------------------------------------------------------------------------------------
# basis: does selectivity move off the unit axes?
# ----------------------------------------------------------------------------------------------------------------------

BASES = ("axis_aligned", "class_mean_basis", "optimised_from_identity", "optimised_from_class_mean")
BASIS_LABELS = {"axis_aligned": "unit axes", "class_mean_basis": "class-mean basis",
                "optimised_from_identity": "optimised (from unit axes)",
                "optimised_from_class_mean": "optimised (from class-mean basis)"}


def _paper_index(context: RunContext) -> float:
    """Mean over the layers of the mean unit selectivity, the paper's index on the unit axes (no negatives rule:
    post-ReLU responses are non-negative), on the analysed examples."""
    return float(np.mean([context.selectivity[layer].mean() for layer in context.layers]))


def compute_basis(context: RunContext, config: ml_collections.ConfigDict) -> dict[str, Any]:
    settings = config.basis
    labels = context.data[1]
    layers = {}
    for layer in context.layers:
        context.log(f"    bases of {layer} ({context.responses[layer].shape[1]} units)")
        result = basis.basis_analysis(context.responses[layer], labels, context.run.num_classes,
                                      negatives=settings.negatives, steps=settings.steps,
                                      learning_rate=settings.learning_rate, parametrisation=settings.parametrisation)
        layers[layer] = {key: value for key, value in result.items() if not key.endswith("_rotation")}
    summary = {name: float(np.mean([layers[layer][name] for layer in layers])) for name in BASES}
    summary["paper_index"] = _paper_index(context)
    return {"negatives": settings.negatives, "layers": layers, "summary": summary}


def compare_basis(per_run: list[dict[str, Any]], config: ml_collections.ConfigDict) -> dict[str, Any]:
    del config
    return {"analysis": "basis", "negatives": per_run[0]["negatives"], "layers": list(per_run[0]["layers"]),
            "alphas": _per_alpha(per_run, lambda r: r["summary"]),
            "per_layer": {name: _layer_means(per_run, name) for name in BASES}}


def basis_run_table(result: dict[str, Any]) -> str:
    rows = [[f"`{layer}`", *(f"{values[name]:.3f}" for name in BASES)] for layer, values in result["layers"].items()]
    rows.append(["mean", *(f"{result['summary'][name]:.3f}" for name in BASES)])
    return (f"Mean class selectivity of each layer's units in four bases (negative responses: "
            f"{result['negatives']}).\n\n" + markdown_table(["layer", *(BASIS_LABELS[n] for n in BASES)], rows))


def basis_sweep_table(comparison: dict[str, Any]) -> str:
    rows = [[f"{row['alpha']:g}", str(len(row["seeds"])), format_stat(row["paper_index"]),
             *(format_stat(row[name]) for name in BASES)] for row in comparison["alphas"]]
    return (f"Mean over layers of the mean unit selectivity in each basis, responses made non-negative by "
            f"'{comparison['negatives']}' in every basis (configs/analysis.py); 'paper index' is the unit axes "
            f"without that rule. Mean ± std over seeds.\n\n" +
            markdown_table(["alpha", "n", "paper index", *(BASIS_LABELS[n] for n in BASES)], rows))


# ----------------------------------------------------------------------------------------------------------------------
# rotation: axis-aligned selectivity under random rotations
# ----------------------------------------------------------------------------------------------------------------------

def rotate_units(activation: jax.Array, rotation_matrix: jax.Array) -> jax.Array:
    """[B, ..., U] -> the same map with its units rotated, ``activation @ rotation`` at every position."""
    return jnp.einsum("...u,uv->...v", activation, rotation_matrix.astype(activation.dtype),
                      precision=jax.lax.Precision.HIGHEST)


@dataclasses.dataclass(frozen=True)
class RotatedAndUndone:
    """``(logits_fn, Q, images) -> logits`` with ``layer``'s units rotated by Q and back by Q^T inside the network
    (hashable, so every run of one model shares the compiled code)."""
    layer: str

    def __call__(self, logits_fn: jax.tree_util.Partial, rotation_matrix: jax.Array, images: jax.Array) -> jax.Array:
        return logits_fn(images, edits={self.layer: lambda a: rotate_units(rotate_units(a, rotation_matrix),
                                                                           rotation_matrix.T)})


def compute_rotation(context: RunContext, config: ml_collections.ConfigDict) -> dict[str, Any]:
    settings = config.rotation
    images, labels = context.data
    ts = np.linspace(0.0, 1.0, settings.num_t).tolist()
    clean_accuracy = float(np.mean(batched(context.run.logits_fn, images, config.batch_size).argmax(-1) == labels))
    layers = {}
    for index, layer in enumerate(context.layers):
        responses = context.responses[layer]
        curves = []
        for draw in range(settings.num_rotations):
            key = jax.random.fold_in(jax.random.fold_in(jax.random.key(config.seed), index), draw)
            q = rotation.haar_rotation(key, responses.shape[1])
            curves.append([float(jnp.mean(rotation.rotated_selectivity(responses, labels, context.run.num_classes,
                                                                        q_t, settings.negatives)))
                           for q_t in rotation.fractional_rotations(q, ts)])
        # The hook's sanity check: rotating the layer's units and rotating them back inside the network (Q, then
        # Q^T) leaves the accuracy as it was.
        undo = jax.tree_util.Partial(RotatedAndUndone(layer), context.run.logits_fn, q)
        undone_accuracy = float(np.mean(batched(undo, images, config.batch_size).argmax(-1) == labels))
        layers[layer] = {"selectivity_vs_t": np.mean(curves, axis=0).tolist(), "num_units": int(responses.shape[1]),
                         "accuracy_rotated_and_undone": undone_accuracy}
        context.log(f"    rotation of {layer}: selectivity {layers[layer]['selectivity_vs_t'][0]:.3f} at t = 0, "
                    f"{layers[layer]['selectivity_vs_t'][-1]:.3f} at t = 1; accuracy {clean_accuracy:.4f} -> "
                    f"{undone_accuracy:.4f} rotated and undone")
    mean_curve = np.mean([v["selectivity_vs_t"] for v in layers.values()], axis=0).tolist()
    return {"t": ts, "negatives": settings.negatives, "clean_accuracy": clean_accuracy, "layers": layers,
            "mean_selectivity_vs_t": mean_curve,
            "summary": {"selectivity_t0": mean_curve[0], "selectivity_t1": mean_curve[-1],
                        "paper_index": _paper_index(context)}}


def compare_rotation(per_run: list[dict[str, Any]], config: ml_collections.ConfigDict) -> dict[str, Any]:
    del config
    curves = []
    for alpha, results in by_alpha(per_run).items():
        curves.append({"alpha": alpha, "mean_selectivity_vs_t":
                       np.mean([r["mean_selectivity_vs_t"] for r in results], axis=0).tolist()})
    return {"analysis": "rotation", "t": per_run[0]["t"], "negatives": per_run[0]["negatives"],
            "alphas": _per_alpha(per_run, lambda r: r["summary"]), "curves": curves,
            "layers": list(per_run[0]["layers"]), "per_layer": _layer_means(per_run, "selectivity_vs_t")}


def rotation_run_table(result: dict[str, Any]) -> str:
    rows = [[f"`{layer}`", str(v["num_units"]), f"{v['selectivity_vs_t'][0]:.3f}", f"{v['selectivity_vs_t'][-1]:.3f}",
             f"{result['clean_accuracy']:.4f}", f"{v['accuracy_rotated_and_undone']:.4f}"]
            for layer, v in result["layers"].items()]
    return (f"Mean selectivity of the units rotated by Q^t, a Haar-random rotation (negative responses: "
            f"{result['negatives']}); accuracy with the rotation applied and undone inside the network.\n\n" +
            markdown_table(["layer", "units", "t = 0 (unit axes)", "t = 1 (rotated)", "accuracy",
                            "accuracy, rotated and undone"], rows))


def rotation_sweep_table(comparison: dict[str, Any]) -> str:
    rows = [[f"{row['alpha']:g}", str(len(row["seeds"])), format_stat(row["paper_index"]),
             format_stat(row["selectivity_t0"]), format_stat(row["selectivity_t1"])] for row in comparison["alphas"]]
    return (f"Mean over layers of the mean unit selectivity at t = 0 (unit axes) and t = 1 (a random rotation), "
            f"responses made non-negative by '{comparison['negatives']}'; 'paper index' is the unit axes without "
            f"that rule. Mean ± std over seeds.\n\n" +
            markdown_table(["alpha", "n", "paper index", "t = 0", "t = 1"], rows))


# ----------------------------------------------------------------------------------------------------------------------
# similarity: are low-selectivity networks computing something else?
# ----------------------------------------------------------------------------------------------------------------------

REPRESENTATIONS_FILE = "similarity_representations.npz"


def compute_similarity(context: RunContext, config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Stores the run's layer representations on the shared examples; the comparison pairs runs."""
    settings = config.similarity
    if settings.conv == "mean":
        matrices = {layer: context.responses[layer] for layer in context.layers}
    else:
        images = context.data[0]
        parts = []
        for index, start in enumerate(range(0, len(images), config.batch_size)):
            acts = context.run.activations(images[start:start + config.batch_size], context.layers)[1]
            parts.append({layer: similarity.layer_matrix(np.asarray(a), conv=settings.conv,
                                                         positions_per_example=settings.positions_per_example,
                                                         seed=config.seed + index) for layer, a in acts.items()})
        matrices = {layer: np.concatenate([p[layer] for p in parts]) for layer in context.layers}
    path = os.path.join(context.run_dir, ANALYSIS_DIR, REPRESENTATIONS_FILE)
    np.savez(path, **{layer: np.asarray(m, np.float32) for layer, m in matrices.items()})
    return {"representations": REPRESENTATIONS_FILE, "layers": {layer: list(m.shape) for layer, m in matrices.items()},
            "conv": settings.conv}


def _representations(result: dict[str, Any], run_dir: str) -> dict[str, np.ndarray]:
    with np.load(os.path.join(run_dir, ANALYSIS_DIR, result["representations"])) as npz:
        return {name: npz[name] for name in npz.files}


def compare_similarity(per_run: list[dict[str, Any]], config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Each run against the alpha = 0 run of its seed, and alpha = 0 runs of different seeds against each other
    (the noise floor), per layer and measure."""
    settings = config.similarity
    reference = {r["seed"]: r for r in per_run if r["alpha"] == 0.0}
    if not reference:
        raise ValueError("similarity compares every run with the alpha = 0 run of its seed: the sweep has no "
                         "finished alpha = 0 run")
    layers = list(per_run[0]["layers"])
    measure = lambda x, y: similarity.layerwise_similarity(x, y, measures=tuple(settings.measures))
    loaded = {(r["alpha"], r["seed"]): _representations(r, r["run_dir"]) for r in per_run}
    rows = []
    for alpha, results in by_alpha(per_run).items():
        if alpha == 0.0:
            continue
        pairs = [measure(loaded[(alpha, r["seed"])], loaded[(0.0, r["seed"])]) for r in results
                 if r["seed"] in reference]
        if pairs:
            rows.append({"alpha": alpha, "seeds": [r["seed"] for r in results if r["seed"] in reference],
                         "layers": {layer: {m: seed_stat([p[layer][m] for p in pairs]) for m in settings.measures}
                                    for layer in layers}})
    seeds = sorted(reference)
    floor_pairs = [measure(loaded[(0.0, a)], loaded[(0.0, b)]) for i, a in enumerate(seeds) for b in seeds[i + 1:]]
    floor = ({layer: {m: seed_stat([p[layer][m] for p in floor_pairs]) for m in settings.measures}
              for layer in layers} if floor_pairs else None)
    return {"analysis": "similarity", "measures": list(settings.measures), "layers": layers, "alphas": rows,
            "seed_floor": floor, "floor_pairs": len(floor_pairs), "conv": settings.conv}


def similarity_sweep_table(comparison: dict[str, Any]) -> str:
    measures = comparison["measures"]
    rows = []
    for row in comparison["alphas"]:
        rows.append([f"{row['alpha']:g}", str(len(row["seeds"])),
                     *(f"{np.mean([row['layers'][layer][m]['mean'] for layer in comparison['layers']]):.3f}"
                       for m in measures)])
    if comparison["seed_floor"]:
        floor = comparison["seed_floor"]
        rows.append([f"0 vs 0, other seed ({comparison['floor_pairs']} pairs)", "",
                     *(f"{np.mean([floor[layer][m]['mean'] for layer in comparison['layers']]):.3f}"
                       for m in measures)])
    return ("Similarity to the alpha = 0 network of the same seed, mean over layers (1 = the same representation "
            "up to the measure's invariances); the last row is the seed-to-seed floor at alpha = 0.\n\n" +
            markdown_table(["alpha", "n", *(m.upper() for m in measures)], rows))


# ----------------------------------------------------------------------------------------------------------------------
# rs: activation maximisation and Representative Substitution
# ----------------------------------------------------------------------------------------------------------------------

RS_IMAGES_FILE = "rs_images.npz"


def _unit_subset(num_units: int, max_units: int) -> np.ndarray:
    """All unit indices, or ``max_units`` evenly spaced ones."""
    if not max_units or num_units <= max_units:
        return np.arange(num_units)
    return np.unique(np.linspace(0, num_units - 1, max_units).round().astype(int))


def _around_grey(units_fn: jax.tree_util.Partial, images: jax.Array) -> jax.Array:
    """``units_fn`` of images given relative to mid-grey: activation maximisation starts from noise around 0.5."""
    return units_fn(images + 0.5)


def compute_rs(context: RunContext, config: ml_collections.ConfigDict) -> dict[str, Any]:
    settings = config.rs
    image_shape = context.run.splits.image_shape
    layers, images_out = {}, {}
    for index, layer in enumerate(context.layers):
        centred = jax.tree_util.Partial(_around_grey, context.run.units_fn(layer))  # pixels in [0, 1]
        units = _unit_subset(context.responses[layer].shape[1], settings.max_units)
        selectivity = context.selectivity[layer][units]
        layers[layer] = {"units": units.tolist(), "selectivity": selectivity.tolist()}
        for objective in settings.objectives:
            generated = feature_vis.activation_maximisation(
                centred, image_shape, unit_indices=units, objective=objective, steps=settings.steps,
                learning_rate=settings.learning_rate, jitter=settings.jitter, l2=settings.l2,
                blur_every=settings.blur_every, blur_sigma=settings.blur_sigma, init_scale=settings.init_scale,
                key=jax.random.fold_in(jax.random.key(config.seed), index), value_range=(-0.5, 0.5))
            rs = np.asarray(feature_vis.representative_substitution(centred, generated, unit_indices=units,
                                                                    batch_size=config.batch_size))
            correlation = feature_vis.rs_selectivity_correlation(rs, selectivity)
            layers[layer][objective] = {"rs": rs.tolist(), "spearman": correlation.rho,
                                        "spearman_p": correlation.pvalue, "mean_rs": float(rs.mean())}
            images_out[f"{layer}|{objective}"] = np.asarray(generated + 0.5, np.float32)
            context.log(f"    {objective.upper()} of {layer}: {len(units)} units, mean RS {rs.mean():.3f}, "
                        f"Spearman(RS, selectivity) {correlation.rho:.2f}")
    np.savez(os.path.join(context.run_dir, ANALYSIS_DIR, RS_IMAGES_FILE), **images_out)
    summary = {f"{objective}_{key}": float(np.nanmean([layers[layer][objective][key] for layer in layers]))
               for objective in settings.objectives for key in ("spearman", "mean_rs")}
    return {"objectives": list(settings.objectives), "layers": layers, "images": RS_IMAGES_FILE,
            "grid_units": settings.grid_units, "summary": summary}


def compare_rs(per_run: list[dict[str, Any]], config: ml_collections.ConfigDict) -> dict[str, Any]:
    del config
    objectives = per_run[0]["objectives"]
    per_layer = {}
    for objective in objectives:
        per_layer[objective] = []
        for alpha, results in by_alpha(per_run).items():
            per_layer[objective].append({"alpha": alpha, "layers": {
                layer: seed_stat([r["layers"][layer][objective]["spearman"] for r in results])
                for layer in results[0]["layers"]}})
    return {"analysis": "rs", "objectives": objectives, "layers": list(per_run[0]["layers"]),
            "alphas": _per_alpha(per_run, lambda r: r["summary"]), "spearman_by_layer": per_layer}


def rs_run_table(result: dict[str, Any]) -> str:
    objectives = result["objectives"]
    rows = [[f"`{layer}`", str(len(v["units"])),
             *(f"{v[o]['mean_rs']:.3f} / {v[o]['spearman']:.2f}" for o in objectives)]
            for layer, v in result["layers"].items()]
    return ("Per layer: mean Representative Substitution / Spearman ρ between RS and unit selectivity.\n\n" +
            markdown_table(["layer", "units", *(o.upper() for o in objectives)], rows))


def rs_sweep_table(comparison: dict[str, Any]) -> str:
    objectives = comparison["objectives"]
    rows = [[f"{row['alpha']:g}", str(len(row["seeds"])), format_stat(row["test_selectivity"]),
             *(f"{format_stat(row[f'{o}_mean_rs'])} / {format_stat(row[f'{o}_spearman'], 2)}" for o in objectives)]
            for row in comparison["alphas"]]
    return ("Mean over layers of the mean RS / the Spearman ρ between RS and unit selectivity; mean ± std over "
            "seeds.\n\n" + markdown_table(["alpha", "n", "test selectivity", *(o.upper() for o in objectives)], rows))


def _figures(module_function: str):
    """A figure function of `selectivity_jax.report.analysis_figures`, imported when called (matplotlib)."""
    def draw(result):
        from selectivity_jax.report import analysis_figures
        return getattr(analysis_figures, module_function)(result)
    return draw


ANALYSES: dict[str, Analysis] = {
    "basis": Analysis("basis", compute_basis, _figures("basis_run_figures"), compare_basis,
                      _figures("basis_sweep_figures"), title="Selectivity in other bases (Leavitt & Morcos 2021)",
                      run_table=basis_run_table, sweep_table=basis_sweep_table),
    "rotation": Analysis("rotation", compute_rotation, _figures("rotation_run_figures"), compare_rotation,
                         _figures("rotation_sweep_figures"),
                         title="Axis-aligned selectivity under rotation (Bau et al. 2017)",
                         run_table=rotation_run_table, sweep_table=rotation_sweep_table),
    "similarity": Analysis("similarity", compute_similarity, None, compare_similarity,
                           _figures("similarity_sweep_figures"), needs_sweep=True,
                           title="Representational similarity to alpha = 0 (CKA, PWCCA)",
                           sweep_table=similarity_sweep_table),
    "ablation": Analysis("ablation", compute_ablation, _figures("ablation_run_figures"), compare_ablation,
                         _figures("ablation_sweep_figures"), title="Unit ablation (Morcos et al. 2018)",
                         run_table=ablation_run_table, sweep_table=ablation_sweep_table),
    "rs": Analysis("rs", compute_rs, _figures("rs_run_figures"), compare_rs, _figures("rs_sweep_figures"),
                   title="Activation maximisation and Representative Substitution (Chen et al.)",
                   run_table=rs_run_table, sweep_table=rs_sweep_table),
}


def get_analyses(names: list[str] | tuple[str, ...] | str) -> list[Analysis]:
    """Analyses by name (a list or a comma-separated string), in the order given; a clear error for unknown names."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in ANALYSES]
    if unknown or not names:
        raise ValueError(f"unknown analyses {unknown}; known: {', '.join(ANALYSES)}")
    return [ANALYSES[n] for n in names]
