"""Analyses of trained networks: robustness (Leavitt & Morcos, "Linking average- and worst-case perturbation
robustness via class selectivity and dimensionality") and representation analyses (class selectivity in other
bases, rotations, similarity, unit ablation, activation maximisation and Representative Substitution).

Each module holds pure functions over arrays or over ``(function, data)``: no files, no figures. The analyses that
run them on trained runs, with their results, tables and figures, are `selectivity_jax.analyses`.
"""
