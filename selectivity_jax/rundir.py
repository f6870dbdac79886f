"""Run and sweep directories: their file names, which files the project writes there, the checks made before
anything is written, and the lock a process holds on a directory while it works in it.

A run directory (``train.loop``) holds ``config.json``, ``metrics.jsonl``, ``timing.jsonl``, ``results.json``,
``selectivity.npz``, ``checkpoints/`` and, after the analyses, ``analysis/`` and ``robustness.json``; a sweep
directory holds ``sweep.json``, one run directory per (alpha, seed) and its reports. ``--overwrite`` deletes only
what this module recognises as the project's (`clear_project_dir`), and a directory another process works in is
refused (`DirectoryLock`). Whether a directory can take a run of a config (`check_workdir`: new, the same run
resumed, or overwritten) is decided here too, with the config fields that do not change what a run computes.
A finished run reads back as one typed `Run` (`load_run`; results as `records.RunResults`, metrics rows as
`records.EpochMetrics`), and files of an older schema pass through `upgrade`, the one place that knows them.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import shutil
import socket
from typing import Any, Callable, Mapping

import filelock
import ml_collections
import numpy as np

from selectivity_jax.records import SCHEMA_VERSION, EpochMetrics, RunResults, to_jsonable

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"       # one row per epoch; the same bits whether or not the run was interrupted
TIMING_FILE = "timing.jsonl"         # wall-clock seconds per epoch and per call (differ between any two runs)
RESULTS_FILE = "results.json"        # written last: its presence means the run is finished
SELECTIVITY_FILE = "selectivity.npz"
CHECKPOINT_DIR = "checkpoints"
PARTIAL_EPOCH_FILE = "partial_epoch.npz"  # per-step metrics of an epoch a SIGTERM interrupted
SWEEP_FILE = "sweep.json"
LOCK_FILE = ".lock"
LOCK_OWNER_FILE = ".lock.owner"
COMPILE_CHECK_FILE = "compile_check.json"   # experiments.compile_check: the programs compiled for one TPU target
COMPILE_CHECK_REPORT = "compile_check.md"
ANALYSIS_DIR = "analysis"           # the analyses' outputs, in a run and in a sweep directory
TENSORBOARD_DIR = "tensorboard"     # TensorBoard event files of the metrics.jsonl rows (config.tensorboard)

# What the project writes into a run directory (training and the analyses) and into a sweep directory (besides the
# run directories); `clear_project_dir` deletes nothing else.
RUN_ENTRIES = frozenset({CONFIG_FILE, METRICS_FILE, TIMING_FILE, RESULTS_FILE, SELECTIVITY_FILE, CHECKPOINT_DIR,
                         PARTIAL_EPOCH_FILE, LOCK_FILE, LOCK_OWNER_FILE, ANALYSIS_DIR, "robustness.json",
                         TENSORBOARD_DIR})
SWEEP_ENTRIES = frozenset({SWEEP_FILE, LOCK_FILE, LOCK_OWNER_FILE, ANALYSIS_DIR, "robustness.json", "report.md",
                           "report.csv", "figures"})
_RUN_DIRNAME = re.compile(r"^alpha_[-+0-9.e]+(inf|nan)?_seed_\d+$")
_TEMPORARY = re.compile(r"\.tmp$")  # atomic writes in progress when a process was killed
_ORBAX_TEMPORARY = ".orbax-checkpoint-tmp"  # in the name of orbax's temporary checkpoint directories


def run_dirname(alpha: float, seed: int) -> str:
    """The directory of one run inside a sweep directory, e.g. ``alpha_-1_seed_0`` or ``alpha_0.5_seed_3``."""
    return f"alpha_{alpha:g}_seed_{seed}"


def is_finished(run_dir: str) -> bool:
    """Whether a run has finished: training and its test evaluation are done (results.json is written last)."""
    return os.path.exists(os.path.join(run_dir, RESULTS_FILE))


def latest_step(run_dir: str) -> int:
    """The newest checkpointed step of a run directory (0 when none)."""
    directory = os.path.join(run_dir, CHECKPOINT_DIR)
    steps = [int(name) for name in os.listdir(directory) if name.isdigit()] if os.path.isdir(directory) else []
    return max(steps, default=0)


def read_json(path: str) -> Any:
    """The JSON document at ``path``; a file that is not JSON is a ValueError naming it."""
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error})") from None


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """The rows of the JSON-lines file at ``path`` (``metrics.jsonl``, ``timing.jsonl``); [] when it is absent."""
    if not os.path.exists(path):
        return []
    rows = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}: line {number} is not valid JSON ({error}); a line cut by a killed process "
                                 "is repaired when the run resumes") from None
    return rows


def write_json(path: str, payload: Mapping[str, Any]) -> None:
    """Writes ``payload`` as strict JSON atomically (temp file + rename), so a killed run never leaves half a
    file."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(to_jsonable(payload), f, indent=2, sort_keys=True, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)


def write_text(path: str, text: str) -> None:
    """Writes ``text`` atomically (temp file + rename)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_npz(path: str, arrays: Mapping[str, Any]) -> None:
    """``np.savez`` atomically (temp file + rename)."""
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


# Config fields added since version 1, with the value that a version-1 run was trained with.
_CONFIG_FIELDS_ADDED_IN_2 = {"model.norm": "batch", "model.dropout": 0.0, "cpu_tuning": "auto"}


def _set_dotted(tree: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree.setdefault(leaf, value)


def upgrade(file_name: str, stored: dict[str, Any]) -> dict[str, Any]:
    """The one place that reads runs stored by an older version: ``stored`` (the parsed ``config.json`` or
    ``results.json``, by ``file_name``) as the current schema writes it, without its ``schema_version``. Version 1
    configs lack `_CONFIG_FIELDS_ADDED_IN_2` (filled with the values those runs had); version 1 results may lack
    ``layer_names`` (the keys of ``per_layer_selectivity``) and the fields `RunResults` leaves None."""
    if not isinstance(stored, dict):
        raise ValueError(f"the {file_name} holds {type(stored).__name__}, not a JSON object")
    version = stored.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f"the {file_name} has schema_version {version!r}, not a whole number")
    if version > SCHEMA_VERSION:
        raise ValueError(f"the {file_name} was written by a newer selectivity_jax (schema {version}; this one reads "
                         f"up to {SCHEMA_VERSION}): upgrade selectivity_jax")
    upgraded = json.loads(json.dumps(stored))
    upgraded.pop("schema_version", None)
    if version < 2 and file_name == CONFIG_FILE:
        for path, value in _CONFIG_FIELDS_ADDED_IN_2.items():
            _set_dotted(upgraded, path, value)
    if version < 2 and file_name == RESULTS_FILE and "layer_names" not in upgraded:
        upgraded["layer_names"] = list(upgraded.get("per_layer_selectivity", {}))
    return upgraded


def _read_stored(path: str) -> dict[str, Any]:
    """``config.json`` or ``results.json`` at ``path`` in the current schema; damage is a ValueError naming it."""
    try:
        return upgrade(os.path.basename(path), read_json(path))
    except ValueError as error:
        message = str(error)
        raise ValueError(message if path in message else f"{path}: {message}") from None


def config_to_store(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """What ``config.json`` holds: the config's fields and the `SCHEMA_VERSION`."""
    return {**json.loads(config.to_json_best_effort(sort_keys=True)), "schema_version": SCHEMA_VERSION}


def read_run_config(run_dir: str) -> dict[str, Any]:
    """The ``config.json`` of a run directory in the current schema (FileNotFoundError naming it when there is
    none)."""
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{run_dir} is not a run directory: no {CONFIG_FILE}")
    return _read_stored(path)


def read_run_results(run_dir: str) -> RunResults:
    """The ``results.json`` of a finished run (ValueError naming the run when it has not finished)."""
    if not is_finished(run_dir):
        raise ValueError(f"{run_dir} has not finished training (no {RESULTS_FILE}); train it first")
    path = os.path.join(run_dir, RESULTS_FILE)
    try:
        return RunResults.from_json(_read_stored(path))
    except (TypeError, AttributeError) as error:  # a JSON object without the fields of a results file
        raise ValueError(f"{path} is not a results file of this project ({error})") from None


def read_metrics(run_dir: str) -> list[EpochMetrics]:
    """The ``metrics.jsonl`` rows of a run, one per epoch logged ([] before the first epoch ended)."""
    return [EpochMetrics.from_json(row) for row in read_jsonl(os.path.join(run_dir, METRICS_FILE))]


def read_unit_selectivity(run_dir: str) -> dict[str, np.ndarray]:
    """Per-unit test selectivity [U] by layer name from a run's ``selectivity.npz`` ({} if the file is absent)."""
    path = os.path.join(run_dir, SELECTIVITY_FILE)
    if not os.path.exists(path):
        return {}
    with np.load(path) as npz:
        return {name: np.asarray(npz[name], dtype=np.float64) for name in npz.files}


@dataclasses.dataclass(frozen=True)
class Run:
    """A finished run as stored: the one type that reads a run directory back (reports, analyses, restoring)."""
    path: str
    results: RunResults
    config: dict[str, Any]                      # config.json in the current schema ({} if absent)
    unit_selectivity: dict[str, np.ndarray]     # per-unit test selectivity [U] by layer
    metrics: list[EpochMetrics]
    epoch_seconds: dict[int, float] = dataclasses.field(default_factory=dict)  # timing.jsonl: wall-clock per epoch

    @property
    def alpha(self) -> float:
        return float(self.results.alpha)

    @property
    def seed(self) -> int:
        return int(self.results.seed)


def load_run(run_dir: str) -> Run | None:
    """The finished run in ``run_dir``, or None when it has no ``results.json`` yet."""
    if not is_finished(run_dir):
        return None
    config = read_run_config(run_dir) if os.path.exists(os.path.join(run_dir, CONFIG_FILE)) else {}
    timing = read_jsonl(os.path.join(run_dir, TIMING_FILE))
    return Run(path=run_dir, results=read_run_results(run_dir), config=config,
               unit_selectivity=read_unit_selectivity(run_dir), metrics=read_metrics(run_dir),
               epoch_seconds={int(row["epoch"]): float(row["epoch_seconds"]) for row in timing if "epoch" in row})


def find_run_dirs(sweep_dir: str) -> dict[tuple[float, int], str]:
    """(alpha, seed) -> run directory, for every sub-directory of ``sweep_dir`` holding a ``config.json``."""
    found: dict[tuple[float, int], str] = {}
    for name in sorted(os.listdir(sweep_dir)):
        run_dir = os.path.join(sweep_dir, name)
        if not os.path.isfile(os.path.join(run_dir, CONFIG_FILE)):
            continue
        config = read_run_config(run_dir)
        key = (float(config["alpha"]), int(config["seed"]))
        if key in found:
            raise ValueError(f"two run directories hold alpha {key[0]:g}, seed {key[1]}: {found[key]} and {run_dir}")
        found[key] = run_dir
    return found


def find_finished_runs(workdir: str) -> tuple[bool, list[str]]:
    """(is_sweep, finished run directories, by alpha then seed): ``workdir`` is one run (it holds config.json) or a
    sweep of runs; ValueError when it holds no finished run."""
    if not os.path.isdir(workdir):
        raise ValueError(f"{workdir} is not a directory (expected a run or a sweep directory)")
    if os.path.exists(os.path.join(workdir, CONFIG_FILE)):
        if not is_finished(workdir):
            raise ValueError(f"{workdir} has not finished training (no {RESULTS_FILE})")
        return False, [workdir]
    found = find_run_dirs(workdir)
    finished = [path for _, path in sorted(found.items()) if is_finished(path)]
    if not finished:
        raise ValueError(f"{workdir} holds no finished run ({len(found)} run directories, none with {RESULTS_FILE})")
    return True, finished


def _foreign_entries(directory: str, known: frozenset[str], subdirectory_ok: Callable[[str], bool]) -> list[str]:
    """Entries of ``directory`` the project did not write (``subdirectory_ok`` accepts the project's folders)."""
    foreign = []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if name in known or _TEMPORARY.search(name):
            continue
        if os.path.isdir(path) and not os.path.islink(path) and subdirectory_ok(name):
            continue
        foreign.append(name)
    return foreign


# What a run leaves besides its config.json: a directory holding any of them without a config.json cannot say which
# config produced them, so no run adopts it (`check_workdir`).
_RUN_OUTPUTS = frozenset({METRICS_FILE, TIMING_FILE, RESULTS_FILE, SELECTIVITY_FILE, CHECKPOINT_DIR, PARTIAL_EPOCH_FILE,
                          ANALYSIS_DIR, TENSORBOARD_DIR, "robustness.json"})


def foreign_run_entries(directory: str) -> list[str]:
    """Entries of a would-be run directory that no run of the project writes (temporary files of interrupted
    writes are the project's)."""
    return _foreign_entries(directory, RUN_ENTRIES, lambda name: False)


def foreign_compile_check_entries(directory: str) -> list[str]:
    """Entries of a would-be compile-check directory that the compile check does not write."""
    return _foreign_entries(directory, frozenset({COMPILE_CHECK_FILE, COMPILE_CHECK_REPORT}), lambda name: False)


def foreign_sweep_entries(directory: str) -> list[str]:
    """Entries of a would-be sweep directory that no sweep of the project writes (run directories by their name,
    reports, temporary files of interrupted writes)."""
    return _foreign_entries(directory, SWEEP_ENTRIES, lambda name: bool(_RUN_DIRNAME.match(name)))


def check_overwritable(directory: str) -> None:
    """Raises ValueError unless ``--overwrite`` may delete ``directory``: absent, or holding nothing but what the
    project writes into a run or a sweep directory (run directories of a sweep included)."""
    if not os.path.lexists(directory):
        return
    if not os.path.isdir(directory) or os.path.islink(directory):
        raise ValueError(f"--overwrite refuses {directory}: it is not a directory")

    def clean_run(name: str) -> bool:
        return bool(_RUN_DIRNAME.match(name)) and not foreign_run_entries(os.path.join(directory, name))
    foreign = _foreign_entries(directory, RUN_ENTRIES | SWEEP_ENTRIES, clean_run)
    if foreign:
        raise ValueError(f"--overwrite refuses to delete {directory}: it holds files this project did not write "
                         f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); delete it yourself or use "
                         "another directory")


def clear_project_dir(directory: str) -> None:
    """Deletes the project's entries of ``directory`` (checked by `check_overwritable` first), keeping the lock."""
    check_overwritable(directory)
    if not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        if name in (LOCK_FILE, LOCK_OWNER_FILE):
            continue
        path = os.path.join(directory, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def check_writable_dir(directory: str) -> None:
    """Raises ValueError unless ``directory`` is a writable directory or could be created as one."""
    path = os.path.abspath(directory)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise ValueError(f"{directory} exists and is not a directory")
    existing, missing = path, []
    while not os.path.lexists(existing):
        existing, name = os.path.dirname(existing), os.path.basename(existing)
        missing.append(name)
    if not os.path.isdir(existing):
        raise ValueError(f"cannot create {directory}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write to {directory}: {existing} is not writable")
    name_max, path_max = os.pathconf(existing, "PC_NAME_MAX"), os.pathconf(existing, "PC_PATH_MAX")
    too_long = [name for name in missing if len(os.fsencode(name)) > name_max]
    if too_long or len(os.fsencode(path)) + 64 > path_max:  # room for the files a run writes inside
        raise ValueError(f"cannot create {directory}: "
                         + (f"the name {too_long[0][:40]}... is longer than {name_max} bytes" if too_long
                            else f"the path is too long for this file system ({path_max} bytes at most)"))


# Config fields (dotted paths) that do not change what a run computes, so a resumed run may differ in them, e.g.
# after the data moved to another directory, or when it resumes on another platform (steps_per_call, vmap_conv and
# cpu_tuning change how the steps run, at most float32 rounding of what they compute); tensorboard only adds event
# files (and runs stored before the field existed lack it).
NON_RESULT_FIELDS = ("sweep", "checkpoint_every_epochs", "max_checkpoints_to_keep", "distributed", "data.data_dir",
                     "data.cache_dir", "data.download", "data.corrupted_dir", "steps_per_call", "vmap_conv",
                     "cpu_tuning", "tensorboard")

def _comparable(config: dict) -> dict[str, Any]:
    """The config flattened to {dotted path: value}, without `NON_RESULT_FIELDS`."""
    flat: dict[str, Any] = {}

    def visit(node: dict, prefix: str) -> None:
        for key, value in node.items():
            path = prefix + key
            if path in NON_RESULT_FIELDS:
                continue
            if isinstance(value, dict):
                visit(value, path + ".")
            else:
                flat[path] = value
    visit(config, "")
    return flat


def _config_changes(workdir: str, config: ml_collections.ConfigDict) -> list[str] | None:
    """The result-changing fields in which the run stored in ``workdir`` differs from ``config`` (None: no run
    stored)."""
    if not os.path.isfile(os.path.join(workdir, CONFIG_FILE)):
        return None
    try:
        stored = read_run_config(workdir)
    except ValueError as error:
        raise ValueError(f"{os.path.join(workdir, CONFIG_FILE)} is not a run config: {error}") from None
    stored, current = _comparable(stored), _comparable(json.loads(config.to_json_best_effort(sort_keys=True)))
    return sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))  # absent = None


def _refuse_changes(workdir: str, changed: list[str] | None) -> None:
    if changed:
        raise ValueError(f"{workdir} holds a run with a different config (fields {changed} differ); "
                         f"use another --workdir, or --overwrite to start it afresh")


def check_workdir(workdir: str, config: ml_collections.ConfigDict, overwrite: bool = False) -> None:
    """Raises ValueError, writing nothing, unless ``workdir`` can take the run of ``config``: new or empty, a run
    of the same config (resumed), or, with ``overwrite``, a run or sweep directory of this project. A command's
    door calls it once per run directory."""
    check_writable_dir(workdir)
    if overwrite:
        check_overwritable(workdir)
        return
    changed = _config_changes(workdir, config)
    _refuse_changes(workdir, changed)
    if changed is None and os.path.isdir(workdir) and foreign_run_entries(workdir):
        raise ValueError(f"{workdir} is not empty and holds no run of this project (no {CONFIG_FILE}); "
                         "use a new or empty directory")
    outputs = sorted(_RUN_OUTPUTS & set(os.listdir(workdir))) if changed is None and os.path.isdir(workdir) else []
    if outputs:
        raise ValueError(f"{workdir} holds a run's {', '.join(outputs)} but no {CONFIG_FILE}: which config produced "
                         "them cannot be told; use another --workdir, or --overwrite to start afresh")


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict, overwrite: bool = False) -> None:
    """Stores the config of a run whose directory passed `check_workdir` at the door; with ``overwrite``, deletes
    the project's files there first. The caller holds the directory's lock; a run of another config that another
    process stored since the door's check is refused."""
    if overwrite:
        clear_project_dir(workdir)
    else:
        _refuse_changes(workdir, _config_changes(workdir, config))
    os.makedirs(workdir, exist_ok=True)
    write_json(os.path.join(workdir, CONFIG_FILE), config_to_store(config))


@dataclasses.dataclass(frozen=True)
class LockOwner:
    """Who holds a directory's lock: written to ``.lock.owner`` by the holder."""
    pid: int
    host: str
    since: str

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host} since {self.since}"


def _read_owner(directory: str) -> LockOwner | None:
    try:
        with open(os.path.join(directory, LOCK_OWNER_FILE)) as f:
            return LockOwner(**json.load(f))
    except (OSError, ValueError, TypeError):
        return None


_HELD_OWNER_FILES: set[str] = set()  # the .lock.owner files of the locks this process holds


def remove_temporary_files(directory: str) -> list[str]:
    """Removes the temporary files of failed writes from ``directory``, a run, sweep or analysis directory whose lock
    this process holds: atomic writes' ``*.tmp`` files and orbax's temporary checkpoint directories in
    ``checkpoints/`` (a command failing for lack of disk space frees what it took; complete checkpoints are kept).
    Returns the paths removed."""
    checkpoints = os.path.join(directory, CHECKPOINT_DIR)
    candidates = [(directory, name) for name in _listdir(directory) if _TEMPORARY.search(name)]
    candidates += [(checkpoints, name) for name in _listdir(checkpoints) if _ORBAX_TEMPORARY in name]
    removed = []
    for parent, name in candidates:
        path = os.path.join(parent, name)
        try:
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
            removed.append(path)
        except OSError:
            pass
    return removed


def _listdir(directory: str) -> list[str]:
    try:
        return os.listdir(directory)
    except OSError:
        return []


def forget_held_locks() -> None:
    """Removes the owner files of the locks this process holds, for a process about to exit without unwinding
    (SIGTERM outside the training loop); the operating system releases the locks themselves."""
    for path in list(_HELD_OWNER_FILES):
        try:
            os.remove(path)
        except OSError:
            pass


class DirectoryLock:
    """An exclusive lock on a run or sweep directory for as long as a process works in it (a context manager).

    A second process is refused with ``DIR is in use by pid N on HOST since TIME``; the operating system releases
    the lock of a process that died, and its stale ``.lock.owner`` is taken over with a warning through ``log``.
    Creates ``directory`` when missing (validate before locking).
    """

    def __init__(self, directory: str, log: Callable[[str], None] = print):
        self.directory = directory
        self.log = log
        self._lock = filelock.FileLock(os.path.join(directory, LOCK_FILE))

    def __enter__(self) -> "DirectoryLock":
        os.makedirs(self.directory, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except filelock.Timeout:
            owner = _read_owner(self.directory)
            raise ValueError(f"{self.directory} is in use by {owner or 'another process'}; wait for it to finish, "
                             "or use another directory") from None
        stale = _read_owner(self.directory)
        if stale is not None:
            self.log(f"warning: taking over the lock of {self.directory} from {stale} (no longer running)")
        owner = LockOwner(os.getpid(), socket.gethostname(),
                          datetime.datetime.now().astimezone().isoformat(timespec="seconds"))
        tmp = os.path.join(self.directory, LOCK_OWNER_FILE + ".tmp")
        with open(tmp, "w") as f:
            json.dump(dataclasses.asdict(owner), f)
        os.replace(tmp, os.path.join(self.directory, LOCK_OWNER_FILE))
        _HELD_OWNER_FILES.add(os.path.join(self.directory, LOCK_OWNER_FILE))
        return self

    def __exit__(self, kind: type | None, *exc: Any) -> None:
        if kind is not None:  # a failed write's temporary files go while no other process can have written any
            remove_temporary_files(self.directory)
        owner = os.path.join(self.directory, LOCK_OWNER_FILE)
        _HELD_OWNER_FILES.discard(owner)
        try:
            os.remove(owner)
        except OSError:
            pass
        self._lock.release()
