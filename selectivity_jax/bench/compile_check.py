"""Every program of a config compiled ahead of time for a TPU slice, on any host: will it compile, fit, how big is it.

For each training config the check builds, through the training loop's own `setup_run` given the target's devices
(`selectivity_jax.bench.tpu_targets`), the programs a run executes there, and compiles each with XLA's TPU compiler:

- ``train``: the train call of a vmapped group of K models (K = 1: a single run) as the loop dispatches it:
  ``steps_per_call`` steps in one jitted scan (16 on TPU by default), states donated, the training split on the
  devices, the batch sharded over every chip of the slice;
- ``eval``: the evaluation scan over the test split (accuracy and selectivity statistics) of the same group;
- ``forward``, ``attacks``, ``gradients``: jitted functions of the analyses (``experiments.analyze``) on one model:
  the pixel-space forward pass every analysis batches, one PGD batch (L-inf, the first ``attacks.pgd_steps``) and one
  batch of input-unit gradient sums of the first selectivity layer, at the analysis settings' sizes.

Per program it records the compiler's verdict (or its error, e.g. out of HBM), the compile seconds, XLA's memory
analysis per device (arguments, including the on-device data set, + outputs - donated + temporaries + generated code)
against the device's HBM, and XLA's cost analysis (FLOPs, bytes accessed). From the train programs of K = 1 and 2 it
gives the largest group that fits 80% of HBM, by the sweep's own rule (`selectivity_jax.sweep.fitting_group_size`).
XLA's ``optimal_seconds`` is kept as XLA's estimate, never as a measured time (see `xla_estimate`).

Records are written after every program (``compile_check.json``, ``compile_check.md``); a rerun reuses every program
already compiled for the same target, config, code and library versions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P, SingleDeviceSharding

from selectivity_jax import rundir
from selectivity_jax.bench.tpu_targets import Target
from selectivity_jax.data import nominal_shape, nominal_split_sizes
from selectivity_jax.data.on_device import EvalArrays, TrainArrays
from selectivity_jax.measures import attacks as attack_lib, gradients as gradient_lib
from selectivity_jax.models import get_model, model_options
from selectivity_jax.models.common import init_variables
from selectivity_jax.models.vmap_conv import conv_strategy, resolve_strategy
from selectivity_jax.parallel import DATA_AXIS, mesh_platform, replicated
from selectivity_jax.records import Record, versions
from selectivity_jax.sweep import compiled_bytes, fitting_group_size
from selectivity_jax.train.setup import setup_run
from selectivity_jax.trained import PixelForward, _apply

TRAINING_PROGRAMS = ("train", "eval")
ANALYSIS_PROGRAMS = ("forward", "attacks", "gradients")
DTYPES = ("float32", "bfloat16")
HEADROOM = 0.8  # the sweep's share of device memory for a group
UNCOSTED_CUSTOM_CALL = "ConcatBitcast"  # XLA's TPU cost model counts -1 s for each (`xla_estimate`)
TARGET_PACKAGES = ("libtpu", "jax-cuda12-pjrt")  # the compilers of TPU and GPU programs, besides jax and jaxlib


@dataclasses.dataclass(frozen=True)
class ProgramCheck(Record):
    """One program compiled for the target: the compiler's verdict, memory per device and XLA's cost analysis."""
    config: str
    program: str                 # one of TRAINING_PROGRAMS + ANALYSIS_PROGRAMS
    models: int                  # K of the vmapped group (1 for the analyses)
    vmap_conv: str               # the strategy in force (resolved for the target's platform)
    compute_dtype: str
    key: str                     # target, config, program, code and versions: a rerun reuses an equal key
    compiled: bool
    error: str = ""              # the compiler's (or the setup's) message, one line
    compile_seconds: float = math.nan
    device_bytes: int = 0        # arguments + outputs - aliased (donated) + temporaries + generated code
    argument_bytes: int = 0
    output_bytes: int = 0
    alias_bytes: int = 0
    temp_bytes: int = 0
    code_bytes: int = 0
    flops: float = math.nan      # XLA's count for one device's share of the program, loop bodies once
    devices: int = 1             # devices the program is sharded over (the batch split over them)
    bytes_accessed: float = math.nan
    xla_optimal_seconds: float = math.nan  # XLA's estimate as reported, not a measured time
    concat_bitcasts: int = 0     # ConcatBitcast custom calls in the executable: XLA's estimate counts -1 s for each
    # Images of one pass of the program's loop (a train step, an evaluation batch), all models together. XLA's cost
    # analysis counts a while loop's body once, whatever its trip count (measured: the same FLOPs for 1 and 4 scanned
    # train steps), and one device's share of an SPMD program (measured: ResNet20's train step on 4 chips reports a
    # quarter of one chip's), so FLOPs per image = flops * devices / images_counted.
    images_counted: int = 0

    @property
    def flops_per_image(self) -> float:
        return self.flops * self.devices / self.images_counted if self.images_counted else math.nan

    @property
    def corrected_seconds(self) -> float:
        """XLA's estimate with 1 s added back per ConcatBitcast custom call (see `xla_estimate`)."""
        return self.xla_optimal_seconds + self.concat_bitcasts


@dataclasses.dataclass(frozen=True)
class Request:
    """What to compile: ``configs`` as (label, config); groups of each K of ``models`` for each strategy and dtype;
    the analysis programs in ``analyses`` at the sizes of ``analysis_settings`` (configs/analysis.py)."""
    target: Target
    configs: tuple[tuple[str, ml_collections.ConfigDict], ...]
    models: tuple[int, ...] = (1, 2)
    strategies: tuple[str, ...] = ("auto",)
    dtypes: tuple[str, ...] = ("float32",)
    analyses: tuple[str, ...] = ANALYSIS_PROGRAMS
    analysis_settings: ml_collections.ConfigDict | None = None


def code_fingerprint() -> str:
    """A hash of the package's source and the versions of the libraries that make the programs: a program compiled
    under an equal fingerprint is the same program."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]
    for path in sorted(root.rglob("*.py")) + sorted(root.rglob("*.cc")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    for package, version in versions(*TARGET_PACKAGES).items():
        digest.update(f"{package}={version}".encode())
    return digest.hexdigest()[:16]


def program_key(fingerprint: str, target: Target, config: ml_collections.ConfigDict, *parts: Any) -> str:
    text = json.dumps([fingerprint, target.name, config.to_json_best_effort(sort_keys=True), *map(str, parts)])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text[:400]}"


Lowering = tuple[Callable[[], Any], int, int]  # (lower: traces the program, images_counted, devices)


def measure(build: Callable[[], Lowering], **fields: Any) -> ProgramCheck:
    """Builds, lowers and compiles one program and reads XLA's analyses; a failure anywhere is the row's ``error``
    (for a TPU target the compiler's verdict, e.g. more memory than the device's HBM)."""
    start = time.time()
    try:
        lower, images, devices = build()
        compiled = lower().compile()
    except Exception as error:  # noqa: BLE001 - the verdict is the result, whatever raised it
        return ProgramCheck(compiled=False, error=_one_line(error), compile_seconds=time.time() - start, **fields)
    seconds = time.time() - start
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis() or {}
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return ProgramCheck(
        compiled=True, compile_seconds=seconds,
        device_bytes=compiled_bytes(compiled) + memory.generated_code_size_in_bytes,
        argument_bytes=memory.argument_size_in_bytes, output_bytes=memory.output_size_in_bytes,
        alias_bytes=memory.alias_size_in_bytes, temp_bytes=memory.temp_size_in_bytes,
        code_bytes=memory.generated_code_size_in_bytes, flops=float(cost.get("flops", math.nan)),
        bytes_accessed=float(cost.get("bytes accessed", math.nan)),
        xla_optimal_seconds=float(cost.get("optimal_seconds", math.nan)),
        concat_bitcasts=compiled.as_text().count(f'custom_call_target="{UNCOSTED_CUSTOM_CALL}"'),
        images_counted=images, devices=devices, **fields)


def _shape(shape: Sequence[int], dtype: Any, sharding: Any) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(tuple(shape), jnp.dtype(dtype), sharding=sharding)


def _group_config(config: ml_collections.ConfigDict, strategy: str, dtype: str) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(config.to_dict())
    config.vmap_conv, config.compute_dtype = strategy, dtype
    return config


def training_lowerings(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                       models: int) -> dict[str, Lowering]:
    """{'train', 'eval'}: (lower, images counted) of a group of ``models`` built by the loop's `setup_run` for
    ``mesh``'s devices, on arguments given as shapes with the shardings the loop gives them."""
    image_shape, num_classes = nominal_shape(config.data)
    num_train, _, num_test = nominal_split_sizes(config.data)
    channels = image_shape[-1]
    alphas = tuple(np.linspace(-1.0, 1.0, models)) if models > 1 else (0.0,)
    setup = setup_run(config, num_classes=num_classes, image_shape=image_shape, num_train=num_train,
                      mean=(0.5,) * channels, std=(0.25,) * channels, mesh=mesh, alphas=alphas, initialize=False)
    everywhere, batches = replicated(mesh), NamedSharding(mesh, P(None, DATA_AXIS))
    data = TrainArrays(_shape((num_train, *image_shape), jnp.uint8, everywhere),
                       _shape((num_train,), jnp.int32, everywhere))
    order = _shape((num_train,), jnp.int32, everywhere)
    num_batches = -(-num_test // config.eval_batch_size)
    split = (num_batches, config.eval_batch_size)
    test = EvalArrays(_shape((*split, *image_shape), jnp.uint8, batches), _shape(split, jnp.int32, batches),
                      _shape(split, jnp.float32, batches))
    train_call = setup.train_steps if setup.steps_per_call > 1 else setup.train_step
    return {"train": (lambda: train_call.lower(setup.initial_state, data, order), models * config.batch_size,
                      mesh.size),
            "eval": (lambda: setup.evaluate.lower(setup.initial_state, test), models * config.eval_batch_size,
                     mesh.size)}


def analysis_lowerings(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                       settings: ml_collections.ConfigDict) -> dict[str, Lowering]:
    """{'forward', 'attacks', 'gradients'}: (lower, images counted) of the analyses' jitted functions on one model
    of ``config`` placed on the first device of ``mesh``, traced for that device's platform, at the sizes of the
    analysis ``settings`` (configs/analysis.py: ``batch_size``, ``attacks``, ``gradients``)."""
    image_shape, num_classes = nominal_shape(config.data)
    one = SingleDeviceSharding(mesh.devices.flat[0])
    model = get_model(config.model.name, num_classes=num_classes, dtype=jnp.dtype(config.compute_dtype),
                      **model_options(config.model))
    variables = jax.tree.map(lambda leaf: _shape(leaf.shape, leaf.dtype, one),
                             jax.eval_shape(lambda: init_variables(model, 0, (1, *image_shape))))
    channels = _shape((image_shape[-1],), jnp.float32, one)
    bound = lambda forward: jax.tree_util.Partial(forward, variables, channels, channels)  # noqa: E731
    batch = settings.batch_size
    images = lambda size: _shape((size, *image_shape), jnp.float32, one)  # noqa: E731
    layer = model.selectivity_layer_names()[0]
    platform = mesh_platform(mesh)

    def traced(lower: Callable[[], Any]) -> Callable[[], Any]:
        def run():
            with conv_strategy("auto", platform=platform):  # what the analyses run by on that platform
                return lower()
        return run

    pgd = attack_lib.AttackConfig(attack="pgd", norm="linf", steps=int(settings.attacks.pgd_steps[0]))
    epsilons = _shape((len(settings.attacks.linf_epsilons),), jnp.float32, one)
    key = jax.eval_shape(lambda: jax.random.key(0))
    gradient_batch = min(batch, settings.gradients.num_examples or batch)
    units_fn = bound(PixelForward(model.clone(selectivity_layers=(layer,)), config.compute_dtype, (layer,), True))
    with conv_strategy("auto", platform=platform):
        units = jax.eval_shape(lambda fn, x: fn(x), units_fn, images(1)).shape[1]
    chosen = min(units, settings.gradients.max_units or units)
    return {
        "forward": (traced(lambda: _apply.lower(bound(PixelForward(model, config.compute_dtype)), images(batch))),
                    batch, 1),
        "attacks": (traced(lambda: attack_lib._attack_batch.lower(
            bound(PixelForward(model, config.compute_dtype)), images(batch), _shape((batch,), jnp.int32, one),
            epsilons, epsilons, jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=one), config=pgd)), batch, 1),
        "gradients": (traced(lambda: gradient_lib._batch_gradient_sums.lower(
            units_fn, images(gradient_batch), _shape((gradient_batch,), jnp.bool_, one),
            _shape((chosen,), jnp.int32, one), _shape((chosen, math.prod(image_shape)), jnp.float32, one),
            unit_chunk_size=min(settings.gradients.unit_chunk_size, chosen))), gradient_batch, 1),
    }


@dataclasses.dataclass(frozen=True)
class GroupFit(Record):
    """The largest vmapped group of one config, strategy and dtype that fits ``HEADROOM`` of HBM, from K = 1 and 2
    (memory without the generated code, as the sweep measures it)."""
    config: str
    vmap_conv: str
    compute_dtype: str
    bytes_one: int
    bytes_two: int               # 0 where K = 2 did not compile
    largest_group: int           # uncapped (the sweep caps its automatic groups at 16 and at the grid); at least 1


def group_fits(rows: Sequence[ProgramCheck], hbm_bytes: int) -> list[GroupFit]:
    """`GroupFit` for every (config, strategy, dtype) whose train program of K = 1 compiled and of K = 2 was tried:
    from both sizes when K = 2 compiled, 1 when it did not (the compiler's verdict, e.g. out of HBM)."""
    train = {(r.config, r.vmap_conv, r.compute_dtype, r.models): r for r in rows if r.program == "train"}
    fits = []
    for (label, strategy, dtype, models), one in train.items():
        two = train.get((label, strategy, dtype, 2))
        if models != 1 or not one.compiled or two is None:
            continue
        one_bytes = one.device_bytes - one.code_bytes
        if not two.compiled:
            fits.append(GroupFit(label, strategy, dtype, one_bytes, 0, 1))
            continue
        two_bytes = two.device_bytes - two.code_bytes
        largest = fitting_group_size(one_bytes, two_bytes, hbm_bytes, 1 << 20, HEADROOM)
        fits.append(GroupFit(label, strategy, dtype, one_bytes, two_bytes, largest))
    return fits


def planned_programs(request: Request, platform: str) -> list[dict[str, Any]]:
    """The programs of ``request``, each as the fields that name it (config, program, models, strategy, dtype)."""
    plans = []
    for label, config in request.configs:
        first_dtype = request.dtypes[0]
        for strategy in request.strategies:
            for dtype in request.dtypes:
                resolved = resolve_strategy(strategy, platform)
                plans += [dict(config=label, program="train", models=k, vmap_conv=resolved, compute_dtype=dtype)
                          for k in request.models]
        default = resolve_strategy("auto", platform)
        plans += [dict(config=label, program="eval", models=k, vmap_conv=default, compute_dtype=first_dtype)
                  for k in request.models]
        plans += [dict(config=label, program=name, models=1, vmap_conv=default, compute_dtype=first_dtype)
                  for name in request.analyses]
    return plans


@dataclasses.dataclass(frozen=True)
class CheckResult(Record):
    """What `run_check` wrote: the target, its devices, the programs and the groups that fit."""
    target: str
    topology: str
    device_kind: str
    devices: int
    hbm_bytes: int               # per device
    versions: dict[str, str]
    fingerprint: str
    programs: list[ProgramCheck]
    fits: list[GroupFit]


def _lowerings(request: Request, mesh: jax.sharding.Mesh) -> Callable[[dict[str, Any]], Lowering]:
    """``lowering(plan)`` for a plan of `planned_programs`; a group's train and eval share one `setup_run`."""
    configs = dict(request.configs)
    built: dict[tuple, dict[str, Lowering]] = {}

    def lowering(plan: dict[str, Any]) -> Lowering:
        config = _group_config(configs[plan["config"]], plan["vmap_conv"], plan["compute_dtype"])
        if plan["program"] in TRAINING_PROGRAMS:
            key = (plan["config"], plan["vmap_conv"], plan["compute_dtype"], plan["models"])
            if key not in built:
                built[key] = training_lowerings(config, mesh, plan["models"])
        else:
            key = (plan["config"], "analyses")
            if key not in built:
                built[key] = analysis_lowerings(config, mesh, request.analysis_settings)
        return built[key][plan["program"]]
    return lowering


def _identity(fields: dict[str, Any]) -> tuple:
    """What names a program, whatever the code that compiled it: config, program, K, strategy, dtype."""
    return tuple(fields[name] for name in ("config", "program", "models", "vmap_conv", "compute_dtype"))


def run_check(request: Request, mesh: jax.sharding.Mesh, stored: Sequence[ProgramCheck],
              save: Callable[[CheckResult], None], log: Callable[[str], None] = print) -> CheckResult:
    """Compiles every program of ``request`` for ``mesh``'s devices (`selectivity_jax.bench.tpu_targets.target_mesh`)
    one after another, reusing the ``stored`` rows of equal key (and keeping the stored rows of other programs: a
    work directory collects every program checked for its target); calls ``save`` after each program and returns the
    whole result."""
    platform, fingerprint = mesh_platform(mesh), code_fingerprint()
    reusable = {row.key: row for row in stored}
    configs, lowering = dict(request.configs), _lowerings(request, mesh)
    plans = list({json.dumps(plan, sort_keys=True): plan for plan in planned_programs(request, platform)}.values())
    keys = [program_key(fingerprint, request.target, configs[plan["config"]], *plan.values()) for plan in plans]
    planned = {_identity(plan) for plan in plans}
    rows = [row for row in stored if row.key not in keys and _identity(dataclasses.asdict(row)) not in planned]
    device = mesh.devices.flat[0]
    log(f"{request.target.name} ({request.target.topology}): {mesh.devices.size} x {device.device_kind}, "
        f"{request.target.hbm_bytes / 2 ** 30:g} GiB HBM per device; {len(plans)} program(s)")
    for plan, key in zip(plans, keys):
        row = reusable.get(key) or measure(lambda: lowering(plan), key=key, **plan)
        rows.append(row)
        log(describe(row, request.target.hbm_bytes) + ("  (recorded earlier)" if key in reusable else ""))
        result = CheckResult(request.target.name, request.target.topology, device.device_kind, mesh.devices.size,
                             request.target.hbm_bytes, versions(*TARGET_PACKAGES), fingerprint, rows,
                             group_fits(rows, request.target.hbm_bytes))
        save(result)
    return result


def describe(row: ProgramCheck, hbm_bytes: int) -> str:
    """One progress line for a program."""
    name = f"{row.config} {row.program} K={row.models} {row.vmap_conv} {row.compute_dtype}"
    if not row.compiled:
        return f"  {name}: NOT COMPILED ({row.compile_seconds:.0f} s): {row.error}"
    over = "; MORE THAN THE DEVICE HOLDS" if row.device_bytes > hbm_bytes else ""
    return (f"  {name}: compiled in {row.compile_seconds:.0f} s, {row.device_bytes / 2 ** 30:.3f} GiB per device "
            f"({100 * row.device_bytes / hbm_bytes:.1f}% of HBM{over}), {gflop(row.flops_per_image)} GFLOP per image")


def gflop(flops: float) -> str:
    """FLOPs as GFLOP with three decimals; '-' where XLA gave no cost analysis (GPU programs compiled without a
    GPU)."""
    return "-" if math.isnan(flops) else f"{flops / 1e9:.3f}"


def xla_estimate(row: ProgramCheck) -> str:
    """XLA's ``optimal_seconds`` where it is positive, labelled as an estimate; the corrected figure, marked as such,
    where only the ConcatBitcast custom calls made it negative; '-' otherwise.

    XLA's TPU cost model gives every ``ConcatBitcast`` custom call (inserted by the TPU compiler itself, for
    concatenations of slices) a cost of -1 s: a ResNet20 width-4 gradient program with one of them reports
    -0.99962 s, a ResNet20 batch-128 train call with three -2.99717 s, programs without them small positive times
    (measured with libtpu 0.0.42.1)."""
    if row.xla_optimal_seconds > 0 and not row.concat_bitcasts:
        return f"{row.xla_optimal_seconds * 1e3:.3g} ms (XLA's estimate, not measured)"
    if row.concat_bitcasts and row.corrected_seconds > 0:
        return (f"{row.corrected_seconds * 1e3:.3g} ms (XLA's estimate {row.xla_optimal_seconds:.5g} s + "
                f"{row.concat_bitcasts} s for the ConcatBitcast calls; not measured)")
    return "-"


def summary_rows(result: CheckResult) -> list[str]:
    """One markdown row per (config, strategy, dtype) with train programs: whether every train call compiled and
    fits the device (XLA's TPU compiler refuses programs whose temporaries exceed HBM, its GPU compiler none), the
    train call of one model and of the largest group compiled, the sweep's group and the train FLOPs per image."""
    gib, rows = 2 ** 30, []
    fits = {(f.config, f.vmap_conv, f.compute_dtype): f.largest_group for f in result.fits}
    groups: dict[tuple, list[ProgramCheck]] = {}
    for row in result.programs:
        if row.program == "train":
            groups.setdefault((row.config, row.vmap_conv, row.compute_dtype), []).append(row)
    for (label, strategy, dtype), rows_of in groups.items():
        one = next((r for r in rows_of if r.models == 1), None)
        largest = max(rows_of, key=lambda r: r.models)
        compiled = all(r.compiled and r.device_bytes <= result.hbm_bytes for r in rows_of)
        figure = lambda r: f"{r.device_bytes / gib:.2f}" if r is not None and r.compiled else "-"  # noqa: E731
        rows.append(f"| {label} | {strategy} | {dtype} | {'yes' if compiled else 'NO'} | "
                    f"{one.compile_seconds:.0f} | {figure(one)} | {largest.models} | {figure(largest)} | "
                    f"{fits.get((label, strategy, dtype), '-')} | "
                    f"{gflop(one.flops_per_image if one.compiled else math.nan)} |"
                    if one is not None else f"| {label} | {strategy} | {dtype} | (no K=1 program) |")
    return rows


def markdown(result: CheckResult) -> str:
    """compile_check.md: a summary per config, the programs, and the groups that fit."""
    gib = 2 ** 30
    lines = [f"# Compile check: {result.target} ({result.topology}, {result.devices} x {result.device_kind}, "
             f"{result.hbm_bytes / gib:g} GiB HBM per device)", "",
             "Compiled ahead of time by XLA's compiler for the target (libtpu for TPUs, the CUDA PJRT plugin for "
             "GPUs) on a host without the device; memory and FLOPs are XLA's analyses of the real executables, "
             "nothing here was run. Versions: "
             + ", ".join(f"{k} {v}" for k, v in result.versions.items()) + f"; code {result.fingerprint}.", "",
             "| config | strategy | dtype | every train call compiles and fits | compile s, K=1 | GiB per device, K=1 "
             "| largest K compiled | GiB per device, that K | sweep's group (80% of HBM, at least 1) "
             "| train GFLOP per image |",
             "|" + "---|" * 10, *summary_rows(result), "",
             "| config | program | K | strategy | dtype | compiled | compile s | GiB per device | % HBM "
             "| GFLOP per image | XLA time estimate |", "|" + "---|" * 11]
    for row in result.programs:
        if row.compiled:
            figures = (f"yes | {row.compile_seconds:.0f} | {row.device_bytes / gib:.3f} | "
                       f"{100 * row.device_bytes / result.hbm_bytes:.1f} | {gflop(row.flops_per_image)} | "
                       f"{xla_estimate(row)}")
        else:
            figures = f"no: {row.error} | {row.compile_seconds:.0f} | | | |"
        lines.append(f"| {row.config} | {row.program} | {row.models} | {row.vmap_conv} | {row.compute_dtype} | "
                     f"{figures} |")
    if result.fits:
        lines += ["", f"Largest vmapped group that fits {HEADROOM:.0%} of HBM (the sweep's rule, from K = 1 and 2):",
                  "", "| config | strategy | dtype | GiB K=1 | GiB K=2 | largest K |", "|" + "---|" * 6]
        lines += [f"| {f.config} | {f.vmap_conv} | {f.compute_dtype} | {f.bytes_one / gib:.3f} | "
                  f"{f.bytes_two / gib:.3f} | {f.largest_group} |" if f.bytes_two else
                  f"| {f.config} | {f.vmap_conv} | {f.compute_dtype} | {f.bytes_one / gib:.3f} | does not compile | 1 |"
                  for f in result.fits]
    return "\n".join(lines) + "\n"


def check_workdir(workdir: str) -> None:
    """ValueError, writing nothing, unless ``workdir`` is new, empty or holds only the compile check's files."""
    rundir.check_writable_dir(workdir)
    foreign = rundir.foreign_compile_check_entries(workdir) if os.path.isdir(workdir) else []
    if foreign:
        raise ValueError(f"{workdir} holds files the compile check did not write ({', '.join(foreign[:5])}); "
                         "use a new or empty directory")


def stored_programs(workdir: str, target: Target) -> list[ProgramCheck]:
    """The rows an earlier check of ``target`` wrote into ``workdir`` ([] when none, or for another target)."""
    path = os.path.join(workdir, rundir.COMPILE_CHECK_FILE)
    if not os.path.exists(path):
        return []
    try:
        stored = CheckResult.from_json(rundir.read_json(path))
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(f"{path} is not a compile check's record ({error}); move it away to start afresh") from None
    return stored.programs if stored.target == target.name else []


def saver(workdir: str) -> Callable[[CheckResult], None]:
    """``save(result)``: compile_check.json and compile_check.md in ``workdir``, each written atomically."""
    def save(result: CheckResult) -> None:
        os.makedirs(workdir, exist_ok=True)
        rundir.write_json(os.path.join(workdir, rundir.COMPILE_CHECK_FILE), result.to_json())
        rundir.write_text(os.path.join(workdir, rundir.COMPILE_CHECK_REPORT), markdown(result))
    return save
