"""Discover and load the runs of a sweep directory (each run read by `selectivity_jax.rundir.load_run`).

A sweep directory holds one sub-directory per (alpha, seed), named by `run_dirname`, each written by
`selectivity_jax.train.loop.train_and_evaluate`: ``config.json`` always, and once the run finished ``results.json``
and ``selectivity.npz`` (plus ``metrics.jsonl`` along the way). An optional ``sweep.json`` with
``{"alphas": [...], "seeds": [...], "config": {...}}`` names the planned grid; without it the planned grid is every
combination of the alphas and seeds found in the run directories.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from typing import Any, Iterable, NamedTuple

from selectivity_jax.rundir import RESULTS_FILE, SWEEP_FILE, Run, find_run_dirs, load_run, read_json


def grid_key(alpha: float, seed: int) -> tuple[float, int]:
    """(alpha, seed) with canonical types, so 1, 1.0 and np.float32(1) name the same run."""
    return float(alpha), int(seed)


class MissingRun(NamedTuple):
    """A planned or started run without results: ``status`` is 'unfinished' (a directory) or 'absent' (none)."""
    alpha: float
    seed: int
    status: str


@dataclasses.dataclass(frozen=True)
class Sweep:
    """The finished runs of a sweep (sorted by alpha, then seed), its planned grid and what is missing."""
    path: str
    runs: tuple[Run, ...]
    planned_alphas: tuple[float, ...]
    planned_seeds: tuple[int, ...]
    missing: tuple[MissingRun, ...]
    config: dict[str, Any]

    @property
    def alphas(self) -> list[float]:
        """The alphas with at least one finished run, ascending."""
        return sorted({run.alpha for run in self.runs})

    @property
    def layer_names(self) -> list[str]:
        """Layer names in forward order (of the first finished run that lists them)."""
        return next((run.results.layer_names for run in self.runs if run.results.layer_names), [])

    @property
    def model(self) -> str:
        """The model name, or the names joined by ', ' if the runs differ."""
        return ", ".join(sorted({run.results.model for run in self.runs}))

    @property
    def num_planned(self) -> int:
        return len(self.planned_alphas) * len(self.planned_seeds)

    def runs_at(self, alpha: float) -> list[Run]:
        """The finished runs at ``alpha``, by seed."""
        return [run for run in self.runs if run.alpha == float(alpha)]



def planned_grid(sweep_file: dict[str, Any] | None,
                 found: Iterable[tuple[float, int]]) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """Sorted planned alphas and seeds: those of ``sweep.json``, else those of the runs found."""
    if sweep_file is not None:
        alphas, seeds = sweep_file["alphas"], sweep_file["seeds"]
    else:
        found = list(found)
        alphas, seeds = [a for a, _ in found], [s for _, s in found]
    return tuple(sorted({float(a) for a in alphas})), tuple(sorted({int(s) for s in seeds}))


def missing_runs(planned: Iterable[tuple[float, int]], started: Iterable[tuple[float, int]],
                 finished: Iterable[tuple[float, int]]) -> tuple[MissingRun, ...]:
    """Planned or started runs without results, sorted: 'unfinished' if started, else 'absent'."""
    started, finished = set(started), set(finished)
    return tuple(MissingRun(alpha, seed, "unfinished" if (alpha, seed) in started else "absent")
                 for alpha, seed in sorted((set(planned) | started) - finished))


def load_sweep(sweep_dir: str) -> Sweep:
    """Loads every run of ``sweep_dir``; raises ValueError when not one run has finished."""
    if not os.path.isdir(sweep_dir):
        raise FileNotFoundError(f"{sweep_dir} is not a directory")
    sweep_path = os.path.join(sweep_dir, SWEEP_FILE)
    sweep_file = read_json(sweep_path) if os.path.exists(sweep_path) else None
    found = find_run_dirs(sweep_dir)
    runs = [run for run in (load_run(path) for path in found.values()) if run is not None]
    if not runs:
        raise ValueError(f"no finished run in {sweep_dir}: {len(found)} run directories, none with "
                         f"{RESULTS_FILE} (runs write it when training and the test evaluation are done)")
    runs.sort(key=lambda run: (run.alpha, run.seed))
    alphas, seeds = planned_grid(sweep_file, found)
    return Sweep(path=sweep_dir, runs=tuple(runs), planned_alphas=alphas, planned_seeds=seeds,
                 missing=missing_runs(itertools.product(alphas, seeds), found, [(r.alpha, r.seed) for r in runs]),
                 config=dict((sweep_file or {}).get("config") or runs[0].config))
