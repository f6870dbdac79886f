"""The math of the analyses: pure functions over arrays or over ``(function, data)``; no files, no figures, no runs.

Robustness (Leavitt & Morcos, "Linking average- and worst-case perturbation robustness via class selectivity and
dimensionality"): `attacks` (FGSM, PGD), `gradients` (input-unit gradient variability), `dimensionality` (PCA).
Representations: `basis` (selectivity in other bases, Leavitt & Morcos 2021), `rotation` (Bau et al. 2017),
`similarity` (CKA, PWCCA), `ablation` (Morcos et al. 2018), `feature_vis` (activation maximisation and
Representative Substitution, Chen et al.), `classes` (preferred classes, per-class accuracy).

This is the math room; `selectivity_jax.analyses` (one letter apart, a different room) holds the plug-ins that run
this math on trained runs and write their results, tables and figures. Nothing here imports the plug-ins.
"""
