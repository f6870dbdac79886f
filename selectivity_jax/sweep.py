"""The alpha x seed grid of a config (Leavitt & Morcos, ICLR 2021, Sec. 3: many models per alpha).

``run_sweep(config, sweep_dir)`` trains every (alpha, seed) of ``config.sweep`` into
``sweep_dir/alpha_<alpha>_seed_<seed>/``, each holding the same files a single run writes. Finished runs are
skipped and unfinished ones resume, so the call can be repeated after any interruption. Both modes go through the
one training loop (selectivity_jax/train/loop.py):

- ``'vmap'``: the runs of one seed are trained K at a time inside one jitted, vmapped step (`train_checked_group`). Models
  of a group share their seed, hence initialization, data order and augmentation, exactly as they would get them
  alone, and differ in alpha; each has its own parameters, optimizer state, batch statistics, selectivity term and
  evaluation.
- ``'serial'``: one run after another (for a cluster scheduler, or little memory).

The default (`default_mode`) is vmap on accelerators and serial on CPU, where one model already keeps the cores busy
and a group trains no faster (models/vmap_conv.py keeps it from training slower).
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections

from selectivity_jax.data import ArraySplits, check_available, load_splits
from selectivity_jax.data.on_device import TrainArrays
from selectivity_jax.parallel import maybe_initialize_distributed, mesh_platform, replicated
from selectivity_jax.records import RunResults
from selectivity_jax.rundir import (SWEEP_FILE, DirectoryLock, check_workdir, check_writable_dir,
                                    foreign_sweep_entries, is_finished, latest_step, read_run_results, run_dirname,
                                    write_json)
from selectivity_jax.train.loop import checked_mesh, run_config, train_checked_group
from selectivity_jax.train.setup import setup_run
from selectivity_jax.train.validation import validate_config

MODES = ("vmap", "serial")
DEFAULT_MAX_GROUP = 16  # the automatic group size's cap


def default_mode(platform: str) -> str:
    """'vmap' on an accelerator ``platform``, 'serial' on CPU (the same speed there, with less memory)."""
    return "serial" if platform == "cpu" else "vmap"


def seed_config(config: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(config.to_dict())
    config.seed = int(seed)
    return config


def compiled_bytes(compiled: jax.stages.Compiled) -> int:
    """Device memory (per device) of a compiled program from XLA's memory analysis: arguments + outputs - donated
    (aliased) + temporaries."""
    memory = compiled.memory_analysis()
    return (memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
            + memory.temp_size_in_bytes)


def train_step_bytes(config: ml_collections.ConfigDict, num_models: int, splits: ArraySplits,
                     mesh: jax.sharding.Mesh) -> int:
    """`compiled_bytes` of the train step of a group of ``num_models`` on ``splits``' shapes, compiled for ``mesh``'s
    devices (states and the on-device training set included). Nothing is initialized or placed on a device: states
    and data enter as shapes."""
    num_train = len(splits.train[1])
    mean, std = (0.5,) * splits.image_shape[-1], (0.25,) * splits.image_shape[-1]  # normalization costs no memory
    setup = setup_run(config, num_classes=splits.num_classes, image_shape=splits.image_shape, num_train=num_train,
                      mean=mean, std=std, mesh=mesh, alphas=(0.0,) * num_models, initialize=False)
    data = TrainArrays(jax.ShapeDtypeStruct((num_train,) + splits.image_shape, jnp.uint8, sharding=replicated(mesh)),
                       jax.ShapeDtypeStruct((num_train,), jnp.int32, sharding=replicated(mesh)))
    order = jax.ShapeDtypeStruct((num_train,), jnp.int32, sharding=replicated(mesh))
    return compiled_bytes(setup.train_step.lower(setup.initial_state, data, order).compile())


def fitting_group_size(one: int, two: int, bytes_limit: int, largest: int, headroom: float = 0.8) -> int:
    """The most models (1 to ``largest``) whose group fits ``headroom`` of ``bytes_limit``, from the bytes of groups
    of one (``one``) and two (``two``) models: memory grows linearly with the group, by ``two - one`` a model."""
    per_model = max(two - one, 1)
    fitting = int((headroom * bytes_limit - (one - per_model)) // per_model)
    return max(1, min(largest, fitting))


def default_group_size(config: ml_collections.ConfigDict, num_alphas: int, splits: Callable[[], ArraySplits], *,
                       mesh: jax.sharding.Mesh, bytes_limit: int | None = None, headroom: float = 0.8) -> int:
    """How many models to vmap together by default: all alphas of a seed, at most `DEFAULT_MAX_GROUP`, and no more
    than fit ``headroom`` of one device's memory.

    The fit is measured, not guessed: the train step compiled for ``mesh``'s devices, for groups of 1 and 2 models,
    gives the per-model and the shared bytes (`fitting_group_size`), against the device's ``bytes_limit`` (from
    ``memory_stats()``; CPU reports none, and then only the cap applies). ``splits`` gives the data, called only
    when a measurement is needed.
    """
    largest = max(1, min(num_alphas, DEFAULT_MAX_GROUP))
    if bytes_limit is None:
        bytes_limit = (mesh.local_devices[0].memory_stats() or {}).get("bytes_limit")  # this process's device
    if not bytes_limit or largest == 1:
        return largest
    data = splits()
    return fitting_group_size(train_step_bytes(config, 1, data, mesh), train_step_bytes(config, 2, data, mesh),
                              bytes_limit, largest, headroom)


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


def run_sweep(config: ml_collections.ConfigDict, sweep_dir: str, *, mode: str | None = None, group_size: int = 0,
              log: Callable[[str], None] = print) -> list[RunResults]:
    """Trains the grid ``config.sweep.alphas`` x ``config.sweep.seeds`` and returns every run's results.

    ``mode``: 'vmap' or 'serial' (None: `default_mode`); ``group_size``: models per vmapped group (0: automatic).
    """
    validate_config(config, sweep=True)
    if mode is not None and mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    if group_size < 0:
        raise ValueError(f"group_size must be >= 0 (0: automatic); got {group_size}")
    check_sweep_dir(sweep_dir)
    for seed in config.sweep.seeds:  # every run directory and the data, once: the groups trust them
        for alpha in config.sweep.alphas:
            run_dir = os.path.join(sweep_dir, run_dirname(alpha, seed))
            check_workdir(run_dir, run_config(seed_config(config, seed), alpha))
    check_available(config.data)
    maybe_initialize_distributed(config.get("distributed", False))
    mesh = checked_mesh(config)
    with DirectoryLock(sweep_dir, log) if jax.process_index() == 0 else contextlib.nullcontext():
        return _run_locked(config, sweep_dir, mode or default_mode(mesh_platform(mesh)), group_size, mesh, log)


def check_sweep_dir(sweep_dir: str) -> None:
    """Raises ValueError, writing nothing, unless ``sweep_dir`` is new, empty or a sweep directory (sweep.json, run
    directories, reports)."""
    check_writable_dir(sweep_dir)
    foreign = foreign_sweep_entries(sweep_dir) if os.path.isdir(sweep_dir) else []
    if foreign:
        raise ValueError(f"{sweep_dir} is not empty and is not a sweep directory of this project (it holds "
                         f"{', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); use a new or empty one")


def _run_locked(config: ml_collections.ConfigDict, sweep_dir: str, mode: str, group_size: int,
                mesh: jax.sharding.Mesh, log: Callable[[str], None]) -> list[RunResults]:
    """`run_sweep` once the sweep directory is checked and locked."""
    alphas, seeds = list(config.sweep.alphas), list(config.sweep.seeds)
    write_json(os.path.join(sweep_dir, SWEEP_FILE), {"alphas": alphas, "seeds": seeds, "mode": mode,
                                                     "config": json.loads(config.to_json_best_effort())})
    size = 1 if mode == "serial" else group_size
    loaded: dict[int, ArraySplits] = {}  # the data a measurement loaded, handed on to the seed's first group

    def splits_of_first_group() -> ArraySplits:
        seed = plan_groups(config, sweep_dir, 1)[0][0]
        loaded[seed] = load_splits(config.data, seed=seed)
        return loaded[seed]

    if not size:  # automatic: measured only when something is left to train
        size = (default_group_size(config, len(alphas), splits_of_first_group, mesh=mesh)
                if plan_groups(config, sweep_dir, 1) else len(alphas))
    groups = plan_groups(config, sweep_dir, size)
    finished = len(alphas) * len(seeds) - sum(len(group) for _, group in groups)
    log(f"sweep {sweep_dir}: {len(alphas)} alphas x {len(seeds)} seeds, {finished} finished, "
        f"{len(groups)} group(s) of at most {size} to train ({mode})")
    for index, (seed, group) in enumerate(groups):
        log(f"group {index + 1}/{len(groups)}: seed {seed}, alpha {', '.join(f'{a:g}' for a in group)}")
        workdirs = [os.path.join(sweep_dir, run_dirname(alpha, seed)) for alpha in group]
        train_checked_group(seed_config(config, seed), group, workdirs, mesh, splits=loaded.pop(seed, None),
                            log=log)
    return [read_run_results(os.path.join(sweep_dir, run_dirname(alpha, seed))) for seed in seeds for alpha in alphas]
