"""Analyses of trained runs as plug-ins, one file each, loaded by name (as big_vision loads its evaluators).

``selectivity_jax/analyses/<name>.py`` defines ``ANALYSIS``, an `Analysis` (base.py): settings, ``run`` on one
trained run, ``compare`` across a sweep, tables and figures. `runner.run_analyses` runs any of them on a run or a
sweep directory (``python -m experiments.analyze``). Adding an analysis: write its file and add its name below.

This is the plug-in room; the math the plug-ins run lives in `selectivity_jax.measures` (pure functions over
arrays), the data they read in `selectivity_jax.data`. A plug-in imports the framework (base.py) and those rooms,
never another plug-in.
"""

from __future__ import annotations

import importlib
from typing import Sequence

from selectivity_jax.analyses.base import Analysis

NAMES = (
    "corruptions",     # accuracy on corrupted test sets (Leavitt & Morcos 2020, average-case robustness)
    "attacks",         # accuracy under FGSM / PGD (worst-case robustness)
    "gradients",       # variability of input-unit gradients
    "dimensionality",  # PCA dimensionality of representations and of their perturbations
    "basis",           # selectivity in other bases (Leavitt & Morcos 2021)
    "rotation",        # axis-aligned selectivity under random rotations (Bau et al. 2017)
    "similarity",      # CKA / PWCCA similarity to alpha = 0
    "ablation",        # unit ablation (Morcos et al. 2018)
    "rs",              # activation maximisation and Representative Substitution (Chen et al.)
    "classes",         # preferred class of each unit and per-class accuracy
)
GROUPS = {
    "robustness": ("corruptions", "attacks", "gradients", "dimensionality"),
    "representations": ("basis", "rotation", "similarity", "ablation", "rs", "classes"),
    "all": NAMES,
}


def load(name: str) -> Analysis:
    """The `Analysis` of ``selectivity_jax/analyses/<name>.py``."""
    if name not in NAMES:
        raise ValueError(f"unknown analysis {name!r}; known: {', '.join(NAMES)} or the groups {', '.join(GROUPS)}")
    return importlib.import_module(f"{__name__}.{name}").ANALYSIS


def get_analyses(names: str | Sequence[str]) -> list[Analysis]:
    """Analyses by name or group name (a list or a comma-separated string), in the order given, each once."""
    if isinstance(names, str):
        names = names.split(",")
    names = [name.strip() for name in names if name.strip()]
    if not names:
        raise ValueError(f"no analysis named; choose among {', '.join(NAMES)} or the groups {', '.join(GROUPS)}")
    chosen: list[str] = []
    for name in names:
        for member in GROUPS.get(name, (name,)):
            if member not in chosen:
                chosen.append(member)
    return [load(name) for name in chosen]
