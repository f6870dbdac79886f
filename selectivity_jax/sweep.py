"""The alpha x seed grid of a config (Leavitt & Morcos, ICLR 2021, Sec. 3: many models per alpha).

``run_sweep(config, sweep_dir)`` trains every (alpha, seed) of ``config.sweep`` into
``sweep_dir/alpha_<alpha>_seed_<seed>/``, each holding the same files a single run writes. Finished runs are
skipped and unfinished ones resume, so the call can be repeated after any interruption. Both modes go through the
one training loop (selectivity_jax/train/loop.py):

- ``'vmap'``: the runs of one seed are trained K at a time inside one jitted, vmapped step (`train_group`). Models
  of a group share their seed, hence initialization, data order and augmentation, exactly as they would get them
  alone, and differ in alpha; each has its own parameters, optimizer state, batch statistics, selectivity term and
  evaluation.
- ``'serial'``: one run after another (for a cluster scheduler, or little memory).
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import ml_collections

from selectivity_jax.train.loop import train_group
from selectivity_jax.train.metrics import CHECKPOINT_DIR, RESULTS_FILE, SWEEP_FILE, run_dirname, write_json

MODES = ("vmap", "serial")
DEFAULT_MAX_GROUP = 16  # the automatic group size's cap


def seed_config(config: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(config.to_dict())
    config.seed = int(seed)
    return config


def latest_step(run_dir: str) -> int:
    """The newest checkpointed step of a run directory (0 when none)."""
    directory = os.path.join(run_dir, CHECKPOINT_DIR)
    steps = [int(name) for name in os.listdir(directory) if name.isdigit()] if os.path.isdir(directory) else []
    return max(steps, default=0)


def is_finished(run_dir: str) -> bool:
    return os.path.exists(os.path.join(run_dir, RESULTS_FILE))


def default_group_size(num_alphas: int) -> int:
    """How many models to vmap together by default: all alphas of a seed, at most `DEFAULT_MAX_GROUP` (16
    ResNet20s at batch 128 need a few GiB; pass ``group_size`` for bigger models or smaller devices)."""
    return max(1, min(num_alphas, DEFAULT_MAX_GROUP))


def plan_groups(config: ml_collections.ConfigDict, sweep_dir: str, group_size: int) -> list[tuple[int, list[float]]]:
    """Unfinished runs as (seed, [alphas]) groups of at most ``group_size``: one seed per group, and only runs that
    stand at the same checkpointed step (so a resumed group steps together)."""
    groups = []
    for seed in config.sweep.seeds:
        by_step: dict[int, list[float]] = {}
        for alpha in config.sweep.alphas:
            run_dir = os.path.join(sweep_dir, run_dirname(alpha, seed))
            if not is_finished(run_dir):
                by_step.setdefault(latest_step(run_dir), []).append(float(alpha))
        for alphas in by_step.values():
            groups += [(int(seed), alphas[i:i + group_size]) for i in range(0, len(alphas), group_size)]
    return groups


def run_sweep(config: ml_collections.ConfigDict, sweep_dir: str, *, mode: str = "vmap", group_size: int = 0,
              log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Trains the grid ``config.sweep.alphas`` x ``config.sweep.seeds`` and returns every run's results."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    alphas, seeds = list(config.sweep.alphas), list(config.sweep.seeds)
    if not alphas or not seeds:
        raise ValueError("config.sweep.alphas and config.sweep.seeds must not be empty")
    if group_size < 0:
        raise ValueError(f"group_size must be >= 0 (0: automatic); got {group_size}")
    os.makedirs(sweep_dir, exist_ok=True)
    write_json(os.path.join(sweep_dir, SWEEP_FILE), {"alphas": alphas, "seeds": seeds, "mode": mode,
                                                     "config": json.loads(config.to_json_best_effort())})
    size = 1 if mode == "serial" else (group_size or default_group_size(len(alphas)))
    groups = plan_groups(config, sweep_dir, size)
    finished = len(alphas) * len(seeds) - sum(len(group) for _, group in groups)
    log(f"sweep {sweep_dir}: {len(alphas)} alphas x {len(seeds)} seeds, {finished} finished, "
        f"{len(groups)} group(s) of at most {size} to train ({mode})")
    for index, (seed, group) in enumerate(groups):
        log(f"group {index + 1}/{len(groups)}: seed {seed}, alpha {', '.join(f'{a:g}' for a in group)}")
        train_group(seed_config(config, seed), group,
                    [os.path.join(sweep_dir, run_dirname(alpha, seed)) for alpha in group], log=log)
    results = []
    for seed in seeds:
        for alpha in alphas:
            with open(os.path.join(sweep_dir, run_dirname(alpha, seed), RESULTS_FILE)) as f:
                results.append(json.load(f))
    return results
