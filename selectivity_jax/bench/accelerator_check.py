"""The accelerator check: every speed question of the project and the paper's CIFAR-10 grid, in one call
(``python -m experiments.accelerator_check``).

Sections, each a typed result, printed as it is measured and written to ``accelerator_check.json`` and
``accelerator_check.md`` after each section (an interrupted check keeps what it measured):

1. the environment (devices, memory, library versions; data parallel over every device of the host);
2. the ResNet20 train step at batch 128, float32 and bfloat16, with and without the selectivity term;
3. vmapped groups of K models for every convolution strategy (models/vmap_conv.py), and which one is fastest;
4. the wall time of one CIFAR-10 epoch (45k images on the devices) for one model and a 16-model group;
5. the PyTorch reference (bench/torch_reference.py), eager and ``torch.compile``, when torch is installed;
6. the alpha grid of configs/cifar10_resnet20.py (19 alphas, one seed, vmapped groups) on an image-folder copy of
   CIFAR-10, for as many epochs as the budget left allows (learning-rate schedule scaled to that length), then the
   sweep report (accuracy and selectivity against alpha, accuracy against selectivity) in the same directory.

``smoke=True`` runs every section at toy size (ResNet20 at width 4, batch 16, groups of 1 and 2, a grid of the
config's two end alphas for one epoch on synthetic images unless a data root is given) so that CI can run it on a CPU
in a few minutes.
"""

from __future__ import annotations

import dataclasses
import glob
import math
import os
import re
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from selectivity_jax.bench import torch_reference
from selectivity_jax.bench.step_timing import (EpochTiming, StepTiming, benchmark_groups, fastest_strategy, time_epoch,
                                               time_train_step)
from selectivity_jax.data import load_splits
from selectivity_jax.models.vmap_conv import STRATEGIES, default_strategy
from selectivity_jax.records import versions
from selectivity_jax.report.sweep_report import write_sweep_report
from selectivity_jax.report.tables import markdown_table
from selectivity_jax.rundir import read_run_results, run_dirname, write_json
from selectivity_jax.sweep import run_sweep
from selectivity_jax.records import format_duration
from selectivity_jax.train.setup import default_steps_per_call

JSON_FILE = "accelerator_check.json"
MARKDOWN_FILE = "accelerator_check.md"
GRID_PREFIX = "grid_"  # the grid's sweep directory: grid_<epochs>ep


@dataclasses.dataclass(frozen=True)
class CheckSizes:
    """How big each section is: `FULL` on an accelerator, `SMOKE` on a CPU."""
    width: int                   # ResNet20 width (16: the paper's network)
    batch_size: int
    timed_steps: int
    group_sizes: tuple[int, ...]
    epoch_images: int            # images of the timed epoch (45k: CIFAR-10's training split less validation)
    epoch_group: int             # models of the timed group epoch
    torch_modes: tuple[str, ...]
    grid_alphas: int             # 0: the config's whole grid; n: n alphas spread over it
    safety: float                # the grid's planned time x this must fit in the budget left


FULL = CheckSizes(width=16, batch_size=128, timed_steps=32, group_sizes=(1, 2, 4, 8, 16), epoch_images=45_000,
                  epoch_group=16, torch_modes=("eager", "compile"), grid_alphas=0, safety=1.25)
SMOKE = CheckSizes(width=4, batch_size=16, timed_steps=2, group_sizes=(1, 2), epoch_images=320, epoch_group=2,
                   torch_modes=("eager",), grid_alphas=2, safety=1.25)


@dataclasses.dataclass
class Environment:
    platform: str
    device_kind: str
    device_count: int
    process_count: int
    memory_bytes: int | None     # per device, as the runtime reports it (None: not reported, e.g. CPU)
    host_cpus: int
    versions: dict[str, str]


@dataclasses.dataclass
class TorchRow:
    mode: str
    selectivity_term: bool
    images_per_second: float | None
    step_ms: float | None
    note: str = ""               # 'torch not installed', or why the variant failed


@dataclasses.dataclass
class GridResult:
    """Section 6: the alpha grid's runs, its planned and actual time, and each alpha's test figures."""
    sweep_dir: str
    alphas: list[float]
    epochs: int                  # 0: not run (``note`` says why)
    group_size: int              # models per vmapped group
    vmap_conv: str               # the strategy the groups ran by
    planned_seconds: float       # compilation and training, times the safety factor
    seconds: float
    test_accuracy: dict[str, float]      # keyed by f"{alpha:g}"
    test_selectivity: dict[str, float]
    report_files: list[str]      # the sweep report's tables and figures, relative to the work directory
    note: str = ""


@dataclasses.dataclass
class AcceleratorCheck:
    smoke: bool
    budget_minutes: float
    environment: Environment | None = None
    train_steps: list[StepTiming] = dataclasses.field(default_factory=list)
    groups: dict[str, dict[int, StepTiming]] = dataclasses.field(default_factory=dict)
    default_strategy: str = ""
    fastest_strategy: str = ""
    epochs: list[EpochTiming] = dataclasses.field(default_factory=list)
    torch: list[TorchRow] = dataclasses.field(default_factory=list)
    grid: GridResult | None = None
    seconds: float = 0.0


def step_config(base: ml_collections.ConfigDict, sizes: CheckSizes,
                compute_dtype: str = "float32") -> ml_collections.ConfigDict:
    """``base`` (configs/cifar10_resnet20.py) at the check's size, for timings on random data of its shape."""
    config = ml_collections.ConfigDict(base.to_dict())
    config.model.width = sizes.width
    config.batch_size = sizes.batch_size
    config.eval_batch_size = sizes.batch_size * max(1, 128 // sizes.batch_size)  # divisible like the batch
    config.compute_dtype = compute_dtype
    return config


def grid_alphas(config: ml_collections.ConfigDict, sizes: CheckSizes) -> list[float]:
    """The config's alphas, or ``sizes.grid_alphas`` of them spread from the first to the last (the ends
    included)."""
    alphas = [float(a) for a in config.sweep.alphas]
    if not sizes.grid_alphas or sizes.grid_alphas >= len(alphas):
        return alphas
    picks = np.linspace(0, len(alphas) - 1, sizes.grid_alphas).round().astype(int)
    return [alphas[i] for i in sorted(set(picks))]


def grid_config(base: ml_collections.ConfigDict, sizes: CheckSizes, data_root: str | None, cache_dir: str,
                vmap_conv: str) -> ml_collections.ConfigDict:
    """``base`` on the image-folder copy of CIFAR-10 at ``data_root`` (smoke without a root: synthetic images of
    the size of configs/quickstart.py:tiny), one seed; the length is set by `plan_epochs`."""
    config = step_config(base, sizes)
    config.vmap_conv = vmap_conv
    config.sweep.alphas = tuple(grid_alphas(config, sizes))
    config.sweep.seeds = (0,)
    config.num_train_steps = 0
    if data_root:
        config.data.name = "image_folder"
        config.data.root = data_root
        config.data.cache_dir = cache_dir
        if sizes is SMOKE:
            config.data.num_val = 100
            config.data.train_subset = 400
            config.data.test_subset = 200
    else:
        config.data.name = "synthetic"
        config.data.num_classes = 10
        config.data.num_per_class = 36
        config.data.test_per_class = 8
        config.data.image_size = 32
        config.data.num_val = 40
        config.data.mean = (0.5, 0.5, 0.5)
        config.data.std = (0.25, 0.25, 0.25)
    return config


def plan_epochs(seconds_left: float, epoch_seconds_per_model: float, num_models: int, num_groups: int,
                compile_seconds: float, safety: float) -> int:
    """The most epochs of the grid that fit ``seconds_left``: each group compiles its steps (train and evaluation,
    about twice ``compile_seconds``), then trains ``num_models`` models' epochs at ``epoch_seconds_per_model``
    each, everything x ``safety``; 0 when not even one epoch fits."""
    fixed = num_groups * 2 * compile_seconds
    return max(0, int((seconds_left / safety - fixed) // (num_models * epoch_seconds_per_model)))


def environment() -> Environment:
    device = jax.devices()[0]
    memory = (device.memory_stats() or {}).get("bytes_limit") if hasattr(device, "memory_stats") else None
    found = versions("torch")  # the libraries a run records, and torch (the reference of section 5)
    found.setdefault("torch", "not installed")
    return Environment(platform=device.platform, device_kind=device.device_kind,
                       device_count=jax.device_count(), process_count=jax.process_count(), memory_bytes=memory,
                       host_cpus=os.cpu_count() or 0, versions=found)


def _torch_rows(sizes: CheckSizes, log: Callable[[str], None]) -> list[TorchRow]:
    if torch_reference.torch_version() is None:
        return [TorchRow(mode, term, None, None, "torch not installed")
                for mode in sizes.torch_modes for term in (False, True)]
    rows = []
    for mode in sizes.torch_modes:
        for term in (False, True):
            try:
                timing = torch_reference.time_train_step(batch_size=sizes.batch_size, width=sizes.width, mode=mode,
                                                         selectivity_term=term, timed_steps=sizes.timed_steps)
                rows.append(TorchRow(mode, term, timing.images_per_second, timing.step_ms))
            except Exception as error:  # a torch.compile back end missing on this machine: say so, go on
                rows.append(TorchRow(mode, term, None, None, f"failed: {type(error).__name__}: "
                                                             f"{str(error).splitlines()[0][:200]}"))
            log(_torch_line(rows[-1]))
    return rows


def _step_line(timing: StepTiming) -> str:
    return (f"  {timing.compute_dtype:8s} {'with' if timing.selectivity_term else 'without':7s} term  "
            f"{timing.images_per_second:10.0f} images/s {timing.step_ms:8.2f} ms/step  "
            f"{timing.compilations} compilation(s), {timing.compile_seconds:.1f} s")


def _group_line(strategy: str, timing: StepTiming, base: float) -> str:
    return (f"  {strategy:9s} K={timing.models:<3d} {timing.images_per_second:10.0f} images/s total "
            f"({timing.images_per_second / base:5.2f}x K=1)  {timing.step_ms:8.2f} ms/step")


def _torch_line(row: TorchRow) -> str:
    what = f"  PyTorch {row.mode:7s} {'with' if row.selectivity_term else 'without':7s} term"
    if row.images_per_second is None:
        return f"{what}  {row.note}"
    return f"{what}  {row.images_per_second:10.0f} images/s {row.step_ms:8.2f} ms/step"


def _existing_grid(workdir: str) -> str | None:
    """An unfinished grid of an earlier call in ``workdir`` (resumed rather than planned anew)."""
    for path in sorted(glob.glob(os.path.join(workdir, GRID_PREFIX + "*ep"))):
        if re.fullmatch(GRID_PREFIX + r"\d+ep", os.path.basename(path)):
            return path
    return None


def _run_grid(base: ml_collections.ConfigDict, check: AcceleratorCheck, sizes: CheckSizes, workdir: str,
              data_root: str | None, deadline: float, log: Callable[[str], None]) -> GridResult:
    strategy = check.fastest_strategy or default_strategy(check.environment.platform)
    config = grid_config(base, sizes, data_root, os.path.join(workdir, "data_cache"), strategy)
    alphas = list(config.sweep.alphas)
    start = time.time()
    splits = load_splits(config.data, seed=0)  # decoded once here; the sweep reads the cache
    num_train = len(splits.train[1])
    log(f"  data: {splits.sizes()} images, loaded in {time.time() - start:.0f} s")
    group_size = math.ceil(len(alphas) / math.ceil(len(alphas) / max(sizes.group_sizes)))
    num_groups = math.ceil(len(alphas) / group_size)
    group_epoch = max(check.epochs, key=lambda e: e.models)
    epoch_seconds_per_model = num_train / group_epoch.images_per_second
    compile_seconds = check.groups.get(strategy, {}).get(max(sizes.group_sizes))
    compile_seconds = compile_seconds.compile_seconds if compile_seconds else 30.0
    existing = _existing_grid(workdir)
    if existing:
        epochs = int(os.path.basename(existing)[len(GRID_PREFIX):-2])
        log(f"  resuming the grid of an earlier call: {existing}")
    elif sizes is SMOKE:
        epochs = 1
    else:
        epochs = plan_epochs(deadline - time.time(), epoch_seconds_per_model, len(alphas), num_groups,
                             compile_seconds, sizes.safety)
    planned = sizes.safety * (num_groups * 2 * compile_seconds + epochs * len(alphas) * epoch_seconds_per_model)
    sweep_dir = existing or os.path.join(workdir, f"{GRID_PREFIX}{epochs}ep")
    if epochs < 1:
        note = (f"the budget left ({format_duration(max(0.0, deadline - time.time()))}) does not fit one epoch of the "
                f"grid (about {format_duration(len(alphas) * epoch_seconds_per_model)} plus compilation); "
                f"give a larger --budget_minutes")
        log(f"  skipped: {note}")
        return GridResult(sweep_dir, alphas, 0, group_size, strategy, planned, 0.0, {}, {}, [], note)
    config.num_epochs = float(epochs)
    config.eval_every_epochs = max(1, epochs // 5)
    config.checkpoint_every_epochs = max(1, epochs // 5)
    log(f"  {len(alphas)} alphas x {epochs} epoch(s) ({epochs * (num_train // config.batch_size)} steps, "
        f"lr decay at {list(config.lr_decay_at)} of them), {num_groups} group(s) of <= {group_size}, {strategy} "
        f"convolutions; planned {format_duration(planned)}")
    start = time.time()
    run_sweep(config, sweep_dir, mode="vmap", group_size=group_size, log=log)
    seconds = time.time() - start
    written = write_sweep_report(sweep_dir, workdir)
    results = {}
    for alpha in alphas:
        results[f"{alpha:g}"] = read_run_results(os.path.join(sweep_dir, run_dirname(alpha, 0)))
    return GridResult(sweep_dir, alphas, epochs, group_size, strategy, planned, seconds,
                      {a: r.test_accuracy for a, r in results.items()},
                      {a: r.test_selectivity for a, r in results.items()},
                      [os.path.relpath(p, workdir) for p in written["tables"] + written["figures"]])


def check_inputs(base: ml_collections.ConfigDict, workdir: str, budget_minutes: float, smoke: bool,
                 data_root: str | None) -> None:
    """Raises ValueError, before anything is written, for input `run_check` cannot run on."""
    if base.model.name != "resnet20":
        raise ValueError(f"the check times ResNet20 against its PyTorch twin; the config's model is "
                         f"{base.model.name!r}")
    if not budget_minutes > 0:
        raise ValueError(f"budget_minutes must be > 0; got {budget_minutes}")
    if data_root is None and not smoke:
        raise ValueError("the grid needs the CIFAR-10 image folder: pass --data_root (a directory or .tar.gz with "
                         "train/<class>/*.jpg and test/<class>/*.jpg), or --smoke")
    if data_root is not None and not os.path.exists(data_root):
        raise ValueError(f"--data_root {data_root} does not exist")
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ValueError(f"--workdir {workdir} is a file")


def _check_environment(check: AcceleratorCheck, base: ml_collections.ConfigDict, sizes: CheckSizes,
                       log: Callable[[str], None]) -> None:
    check.environment = env = environment()
    log(f"1. {env.device_count} x {env.device_kind} ({env.platform}), {env.process_count} process(es)"
        + (f", data parallel over all {env.device_count} devices" if env.device_count > 1 else "")
        + f"; {', '.join(f'{k} {v}' for k, v in env.versions.items())}")


def _check_train_steps(check: AcceleratorCheck, base: ml_collections.ConfigDict, sizes: CheckSizes,
                       log: Callable[[str], None]) -> None:
    log(f"2. ResNet20 (width {sizes.width}) train step, batch {sizes.batch_size}, "
        f"{default_steps_per_call(check.environment.platform)} step(s) per call:")
    for dtype in ("float32", "bfloat16"):
        for term in (False, True):
            timing = time_train_step(step_config(base, sizes, dtype), alphas=(1.0,), selectivity_term=term,
                                     timed_steps=sizes.timed_steps)
            check.train_steps.append(timing)
            log(_step_line(timing))


def _check_groups(check: AcceleratorCheck, base: ml_collections.ConfigDict, sizes: CheckSizes,
                  log: Callable[[str], None]) -> None:
    log(f"3. vmapped groups K = {', '.join(map(str, sizes.group_sizes))}, every convolution strategy:")
    check.groups = benchmark_groups(step_config(base, sizes), sizes.group_sizes, STRATEGIES,
                                    timed_steps=sizes.timed_steps)
    for strategy, rows in check.groups.items():
        for timing in rows.values():
            log(_group_line(strategy, timing, rows[1].images_per_second))
    check.default_strategy = default_strategy(check.environment.platform)
    check.fastest_strategy = fastest_strategy(check.groups, max(sizes.group_sizes))
    log(f"  fastest at K={max(sizes.group_sizes)}: {check.fastest_strategy}; the project's default here: "
        f"{check.default_strategy}")


def _check_epochs(check: AcceleratorCheck, base: ml_collections.ConfigDict, sizes: CheckSizes,
                  log: Callable[[str], None]) -> None:
    log(f"4. one epoch of {sizes.epoch_images} images on the devices:")
    for models in (1, sizes.epoch_group):
        config = step_config(base, sizes)
        config.vmap_conv = check.fastest_strategy
        epoch = time_epoch(config, models=models, num_train=sizes.epoch_images)
        check.epochs.append(epoch)
        log(f"  {models} model(s): {epoch.seconds:.1f} s ({epoch.images_per_second:.0f} images/s in total)")


def _check_torch(check: AcceleratorCheck, base: ml_collections.ConfigDict, sizes: CheckSizes,
                 log: Callable[[str], None]) -> None:
    log("5. PyTorch reference (same ResNet20, selectivity from forward hooks):")
    check.torch = _torch_rows(sizes, log)


# Sections 1 to 5, in order: each measures into the check and logs as it goes (the grid, 6, takes what they leave).
MEASUREMENTS = (_check_environment, _check_train_steps, _check_groups, _check_epochs, _check_torch)


def run_check(base: ml_collections.ConfigDict, workdir: str, *, budget_minutes: float = 8.0, smoke: bool = False,
              data_root: str | None = None, log: Callable[[str], None] = print) -> AcceleratorCheck:
    """Runs every section into ``workdir`` within ``budget_minutes`` in all (the grid gets what the others leave),
    writing the files after each section.

    ``base``: the training config whose model, recipe and alpha grid are checked (configs/cifar10_resnet20.py).
    """
    check_inputs(base, workdir, budget_minutes, smoke, data_root)
    start = time.time()
    deadline = start + 60 * budget_minutes
    sizes = SMOKE if smoke else FULL
    check = AcceleratorCheck(smoke=smoke, budget_minutes=budget_minutes)
    os.makedirs(workdir, exist_ok=True)

    def save():
        check.seconds = time.time() - start
        write_check(check, workdir)

    for measure in MEASUREMENTS:
        measure(check, base, sizes, log)
        save()
    log(f"6. the alpha grid, {format_duration(max(0.0, deadline - time.time()))} of the budget left:")
    check.grid = _run_grid(base, check, sizes, workdir, data_root, deadline, log)
    save()
    log(f"done in {format_duration(check.seconds)}: {os.path.join(workdir, MARKDOWN_FILE)}")
    return check


def _mb(value: int | None) -> str:
    return "not reported" if value is None else f"{value / 2 ** 30:.1f} GiB"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _environment_md(check: AcceleratorCheck) -> list[str]:
    env = check.environment
    if not env:
        return []
    rows = [["devices", f"{env.device_count} x {env.device_kind} ({env.platform})"],
            ["processes", str(env.process_count)],
            ["memory per device", _mb(env.memory_bytes)],
            ["host CPUs", str(env.host_cpus)],
            ["data parallel", "yes, over every device" if env.device_count > 1 else "no (one device)"]]
    return ["## 1. Environment", "",
            markdown_table(["what", "value"], rows + [[k, v] for k, v in env.versions.items()], align="l"), ""]


def _train_steps_md(check: AcceleratorCheck) -> list[str]:
    if not check.train_steps:
        return []
    rows = []
    for dtype in ("float32", "bfloat16"):
        timings = {t.selectivity_term: t for t in check.train_steps if t.compute_dtype == dtype}
        for term, t in sorted(timings.items()):
            overhead = f"{100 * (t.step_ms / timings[False].step_ms - 1):+.1f}%" if term and False in timings else ""
            rows.append([dtype, "yes" if term else "no", _rate(t.images_per_second), f"{t.step_ms:.2f}",
                         overhead, str(t.compilations), f"{t.compile_seconds:.1f}"])
    first = check.train_steps[0]
    return ["## 2. ResNet20 train step", "",
            f"Batch {SMOKE.batch_size if check.smoke else FULL.batch_size}, {first.steps_per_call} step(s) "
            "per jitted call, data on the devices (gather, crop, flip and normalization inside the step).", "",
            markdown_table(["dtype", "selectivity term", "images/s", "ms/step", "term overhead", "compilations",
                            "compile s"], rows), ""]


def _groups_md(check: AcceleratorCheck) -> list[str]:
    if not check.groups:
        return []
    sizes = sorted(next(iter(check.groups.values())))

    def cell(rows: dict[int, StepTiming], k: int) -> str:
        return f"{_rate(rows[k].images_per_second)} ({rows[k].images_per_second / rows[1].images_per_second:.2f}x)"
    rows = [[strategy] + [cell(check.groups[strategy], k) for k in sizes] for strategy in check.groups]
    return ["## 3. vmapped groups (total images/s, and vs K = 1)", "",
            markdown_table(["strategy"] + [f"K = {k}" for k in sizes], rows), "",
            f"Fastest at K = {sizes[-1]}: **{check.fastest_strategy}**; the project's default on this "
            f"platform (`config.vmap_conv='auto'`): **{check.default_strategy}**."
            + ("" if check.fastest_strategy == check.default_strategy else
               " They differ: set `--config.vmap_conv` or change `default_strategy` in "
               "selectivity_jax/models/vmap_conv.py."), ""]


def _epochs_md(check: AcceleratorCheck) -> list[str]:
    if not check.epochs:
        return []
    rows = [[str(e.models), str(e.num_train), str(e.steps), f"{e.seconds:.2f}", _rate(e.images_per_second)]
            for e in check.epochs]
    return ["## 4. One epoch, data on the devices", "",
            markdown_table(["models", "images", "steps", "seconds", "images/s in total"], rows), ""]


def _torch_md(check: AcceleratorCheck) -> list[str]:
    if not check.torch:
        return []
    rows = [[r.mode, "yes" if r.selectivity_term else "no", _rate(r.images_per_second),
             "-" if r.step_ms is None else f"{r.step_ms:.2f}", r.note] for r in check.torch]
    lines = ["## 5. PyTorch reference", "",
             markdown_table(["mode", "selectivity term", "images/s", "ms/step", "note"], rows), ""]
    jax_term = [t for t in check.train_steps if t.compute_dtype == "float32" and t.selectivity_term]
    for r in check.torch:
        if r.selectivity_term and r.images_per_second and jax_term:
            lines.append(f"JAX float32 / PyTorch {r.mode}, with the selectivity term: "
                         f"**{jax_term[0].images_per_second / r.images_per_second:.2f}x**")
    return lines + [""]


def _grid_md(check: AcceleratorCheck) -> list[str]:
    grid = check.grid
    if not grid:
        return []
    lines = ["## 6. The alpha grid", ""]
    if grid.note:
        lines += [grid.note, ""]
    if grid.epochs:
        rows = [[a, f"{grid.test_accuracy[a]:.4f}", f"{grid.test_selectivity[a]:.4f}"] for a in grid.test_accuracy]
        lines += [f"{len(grid.alphas)} alphas x {grid.epochs} epoch(s), one seed, groups of <= {grid.group_size}, "
                  f"{grid.vmap_conv} convolutions: {format_duration(grid.seconds)} (planned "
                  f"{format_duration(grid.planned_seconds)}). Runs in `{os.path.basename(grid.sweep_dir)}/`; "
                  "report: `report.md`, figures in `figures/`.", "",
                  markdown_table(["alpha", "test accuracy", "test selectivity"], rows), ""]
        lines += [f"![{name}]({name})" for name in grid.report_files if name.endswith(".png")] + [""]
    return lines


def markdown(check: AcceleratorCheck) -> str:
    """The check as a Markdown page (the sections measured so far)."""
    lines = [f"# Accelerator check{' (smoke: toy sizes)' if check.smoke else ''}", ""]
    for section in (_environment_md, _train_steps_md, _groups_md, _epochs_md, _torch_md, _grid_md):
        lines += section(check)
    lines.append(f"Total: {format_duration(check.seconds)} of a {check.budget_minutes:g}-minute budget.")
    return "\n".join(lines) + "\n"


def _jsonable(check: AcceleratorCheck) -> dict[str, Any]:
    payload = dataclasses.asdict(check)
    payload["groups"] = {s: {str(k): v for k, v in rows.items()} for s, rows in payload["groups"].items()}
    return payload


def write_check(check: AcceleratorCheck, workdir: str) -> None:
    """``accelerator_check.json`` and ``accelerator_check.md`` in ``workdir`` (atomically)."""
    write_json(os.path.join(workdir, JSON_FILE), _jsonable(check))
    tmp = os.path.join(workdir, MARKDOWN_FILE + ".tmp")
    with open(tmp, "w") as f:
        f.write(markdown(check))
    os.replace(tmp, os.path.join(workdir, MARKDOWN_FILE))
