"""The one training loop: a config and a work directory in, everything a researcher needs out.

``train_and_evaluate(config, workdir)`` trains one model at one alpha (Leavitt & Morcos, ICLR 2021, Sec. 2.3) and
writes into ``workdir``: ``config.json``, ``metrics.jsonl`` (one line per epoch), ``results.json`` (final test
figures), ``selectivity.npz`` (per-unit test selectivity per layer) and orbax checkpoints under ``checkpoints/``.
Running it again on the same directory resumes from the newest checkpoint and ends with the same results as an
uninterrupted run; SIGTERM saves a checkpoint before the process exits.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import shutil
import signal
import time
from importlib import metadata
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from selectivity_jax.data import load_splits
from selectivity_jax.data.on_device import channel_stats, put_eval_arrays, put_train_arrays
from selectivity_jax.models import get_model
from selectivity_jax.parallel import (batch_sharded, check_batch_size, make_data_mesh, maybe_initialize_distributed,
                                      replicated)
from selectivity_jax.train.checkpoint import checkpoint_manager, restore_latest, save_state
from selectivity_jax.train.metrics import MetricsWriter, Progress, write_json
from selectivity_jax.train.state import TrainState, create_train_state, learning_rate_schedule, make_optimizer
from selectivity_jax.train.step import StepSpec, make_evaluate, make_permutation_fn, make_train_step

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
SELECTIVITY_FILE = "selectivity.npz"
CHECKPOINT_DIR = "checkpoints"
# Config fields that do not change what a run computes, so a resumed run may differ in them.
NON_RESULT_FIELDS = ("sweep", "checkpoint_every_epochs", "max_checkpoints_to_keep", "distributed")


class Preempted(Exception):
    """Raised after a SIGTERM (or ``stop_after_steps``) once the checkpoint of the current step is saved."""

    def __init__(self, step: int):
        super().__init__(f"stopped at step {step}; checkpoint saved, run the same command again to resume")
        self.step = step


def _comparable(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in NON_RESULT_FIELDS}


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict, overwrite: bool = False) -> None:
    """Creates ``workdir`` and stores the config; refuses a directory that holds a different config."""
    config_json = json.loads(config.to_json_best_effort(sort_keys=True))
    path = os.path.join(workdir, CONFIG_FILE)
    if overwrite and os.path.isdir(workdir):
        shutil.rmtree(workdir)
    if os.path.exists(path):
        with open(path) as f:
            stored = json.load(f)
        if _comparable(stored) != _comparable(config_json):
            changed = sorted(k for k in set(stored) | set(config_json)
                             if k not in NON_RESULT_FIELDS and stored.get(k) != config_json.get(k))
            raise ValueError(f"{workdir} holds a run with a different config (fields {changed} differ); "
                             f"use another --workdir, or --overwrite to start it afresh")
    os.makedirs(workdir, exist_ok=True)
    write_json(path, config_json)


def build_model(config: ml_collections.ConfigDict, num_classes: int):
    """The registered model named by ``config.model.name`` with the config's other model fields as arguments."""
    kwargs = {k: v for k, v in config.model.to_dict().items() if k != "name" and v is not None}
    if "selectivity_layers" in kwargs and isinstance(kwargs["selectivity_layers"], list):
        kwargs["selectivity_layers"] = tuple(kwargs["selectivity_layers"])
    return get_model(config.model.name, num_classes=num_classes, dtype=jnp.dtype(config.compute_dtype), **kwargs)


def summarize_eval(totals: dict, stats) -> dict[str, Any]:
    """Host-side figures of one `make_evaluate` pass."""
    totals = jax.device_get(totals)
    count = float(totals["count"])
    per_layer = {k: float(v) for k, v in jax.device_get(stats.per_layer()).items()}
    dead = {k: float(v) for k, v in jax.device_get(stats.dead_fraction()).items()}
    return {"accuracy": float(totals["correct"]) / count, "cross_entropy": float(totals["cross_entropy"]) / count,
            "selectivity": float(np.mean(list(per_layer.values()))), "per_layer_selectivity": per_layer,
            "dead_unit_fraction": float(np.mean(list(dead.values()))), "per_layer_dead_fraction": dead,
            "count": int(count)}


def _library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "tensorflow-datasets"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


class _SigtermFlag:
    """Turns SIGTERM into a flag the loop checks between steps (main thread only; restored on exit)."""

    def __init__(self):
        self.raised = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not in the main thread: no handler
            self._previous = None
        return self

    def _handle(self, signum, frame):
        del signum, frame
        self.raised = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


@dataclasses.dataclass(frozen=True)
class RunSetup:
    """Everything a run derives from its config: model, schedule, jitted steps and the initial state."""
    model: Any
    layer_names: list[str]
    spec: StepSpec
    steps_per_epoch: int
    total_steps: int
    num_epochs: int
    initial_state: TrainState
    train_step: Callable
    permutation: Callable
    evaluate: Callable


def setup_run(config: ml_collections.ConfigDict, *, num_classes: int, image_shape: tuple[int, ...], num_train: int,
              mean: Any, std: Any, mesh: jax.sharding.Mesh, selectivity_term: bool = True) -> RunSetup:
    """Builds the model, learning-rate schedule, optimizer, jitted steps and replicated initial state of a run."""
    check_batch_size(config.batch_size, mesh, num_train)
    check_batch_size(config.eval_batch_size, mesh, what="eval_batch_size")
    steps_per_epoch = num_train // config.batch_size
    total_steps = config.num_train_steps or int(round(config.num_epochs * steps_per_epoch))
    if total_steps <= 0:
        raise ValueError("the run has no training steps: set num_train_steps or num_epochs > 0")
    model = build_model(config, num_classes)
    learning_rate = config.learning_rate * config.batch_size / config.lr_base_batch_size
    schedule = learning_rate_schedule(learning_rate, total_steps, tuple(config.lr_decay_at), config.lr_decay_factor,
                                      int(config.lr_warmup_epochs * steps_per_epoch))
    tx = make_optimizer(schedule, config.momentum, config.weight_decay, config.get("nesterov", False))
    spec = StepSpec(num_classes=num_classes, batch_size=config.batch_size, steps_per_epoch=steps_per_epoch,
                    mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std),
                    crop_padding=config.augment.crop_padding, flip=config.augment.flip,
                    alpha_warmup_steps=int(config.alpha_warmup_epochs * steps_per_epoch),
                    compute_dtype=jnp.dtype(config.compute_dtype), selectivity_term=selectivity_term,
                    batch_sharding=batch_sharded(mesh))
    input_shape = (1,) + tuple(image_shape)
    state = jax.jit(lambda: create_train_state(model, tx, seed=config.seed, alpha=config.alpha,
                                               input_shape=input_shape), out_shardings=replicated(mesh))()
    return RunSetup(model=model, layer_names=model.selectivity_layer_names(), spec=spec,
                    steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                    num_epochs=math.ceil(total_steps / steps_per_epoch), initial_state=state,
                    train_step=make_train_step(spec, schedule), permutation=make_permutation_fn(num_train),
                    evaluate=make_evaluate(spec))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, overwrite: bool = False,
                       stop_after_steps: int | None = None,
                       log: Callable[[str], None] = print) -> dict[str, Any]:
    """Trains one run and returns its results (the content of ``results.json``).

    Args:
      config: see configs/base.py.
      workdir: output directory; an existing one with the same config is resumed.
      overwrite: delete ``workdir`` first.
      stop_after_steps: simulate a preemption after this many steps in this call (tests): save and raise
        `Preempted`, as a SIGTERM does.
    """
    maybe_initialize_distributed(config.get("distributed", False))
    prepare_workdir(workdir, config, overwrite)
    results_path = os.path.join(workdir, RESULTS_FILE)

    mesh = make_data_mesh(config.get("num_devices", 0))
    splits = load_splits(config.data, seed=config.seed)
    train_images, train_labels = splits.train
    mean, std = (config.data.mean, config.data.std) if config.data.get("mean") else channel_stats(train_images)
    run = setup_run(config, num_classes=splits.num_classes, image_shape=splits.image_shape,
                    num_train=len(train_labels), mean=mean, std=std, mesh=mesh)
    state, total_steps, steps_per_epoch = run.initial_state, run.total_steps, run.steps_per_epoch
    manager = checkpoint_manager(os.path.join(workdir, CHECKPOINT_DIR), config.max_checkpoints_to_keep)
    writer = MetricsWriter(os.path.join(workdir, METRICS_FILE))
    restored = restore_latest(manager, state)
    if restored is not None:
        state = restored
        writer.truncate_after(int(state.step))
        log(f"resuming {workdir} from step {int(state.step)}")
    elif os.path.exists(writer.path):
        os.remove(writer.path)
    step = int(state.step)
    if step >= total_steps and os.path.exists(results_path):
        log(f"{workdir} is finished; results in {results_path}")
        with open(results_path) as f:
            return json.load(f)

    train_data = put_train_arrays(train_images, train_labels, mesh)
    val_data = put_eval_arrays(*splits.val, config.eval_batch_size, mesh) if len(splits.val[1]) else None
    train_step, permutation, evaluate = run.train_step, run.permutation, run.evaluate
    num_epochs, layer_names = run.num_epochs, run.layer_names
    log(f"{config.model.name}, alpha {config.alpha}, seed {config.seed}: {splits.sizes()} examples, "
        f"{total_steps} steps ({num_epochs} epochs of {steps_per_epoch}), batch {config.batch_size} on "
        f"{mesh.devices.size} {jax.devices()[0].device_kind} device(s); selectivity layers {layer_names}")

    progress = Progress(num_epochs)
    start_time = time.time()
    steps_this_call = 0
    with _SigtermFlag() as sigterm:
        while step < total_steps:
            epoch = step // steps_per_epoch
            order = permutation(state, epoch)
            epoch_end = min((epoch + 1) * steps_per_epoch, total_steps)
            epoch_start_step, epoch_start_time = step, time.time()
            step_metrics = []
            while step < epoch_end:
                state, metrics = train_step(state, train_data, order)
                step_metrics.append(metrics)
                step += 1
                steps_this_call += 1
                if sigterm.raised or (stop_after_steps is not None and steps_this_call >= stop_after_steps):
                    save_state(manager, state, wait=True)
                    raise Preempted(step)
            train = jax.device_get(jax.tree.map(lambda *xs: jnp.mean(jnp.stack(xs)), *step_metrics))
            seconds = time.time() - epoch_start_time
            row = {"epoch": epoch + 1, "step": step, "train_loss": train["loss"],
                   "train_cross_entropy": train["cross_entropy"], "train_selectivity": train["selectivity"],
                   "train_accuracy": train["accuracy"], "alpha": train["alpha"],
                   "learning_rate": float(jax.device_get(step_metrics[-1]["learning_rate"])),
                   "images_per_second": (step - epoch_start_step) * config.batch_size / seconds,
                   "epoch_seconds": seconds}
            last = step >= total_steps
            if val_data is not None and ((epoch + 1) % config.eval_every_epochs == 0 or last):
                val = summarize_eval(*evaluate(state, val_data))
                row.update({"val_accuracy": val["accuracy"], "val_cross_entropy": val["cross_entropy"],
                            "val_selectivity": val["selectivity"], "val_dead_unit_fraction": val["dead_unit_fraction"]})
            writer.write(row)
            progress.epoch(epoch + 1, row)
            if (epoch + 1) % config.checkpoint_every_epochs == 0 or last:
                save_state(manager, state)
    manager.wait_until_finished()

    test_data = put_eval_arrays(*splits.test, config.eval_batch_size, mesh)
    test_totals, test_stats = evaluate(state, test_data)
    test = summarize_eval(test_totals, test_stats)
    results = {
        "test_accuracy": test["accuracy"], "test_cross_entropy": test["cross_entropy"],
        "test_selectivity": test["selectivity"], "per_layer_selectivity": test["per_layer_selectivity"],
        "test_dead_unit_fraction": test["dead_unit_fraction"],
        "per_layer_dead_fraction": test["per_layer_dead_fraction"], "test_examples": test["count"],
        "layer_names": layer_names, "alpha": config.alpha, "seed": config.seed, "model": config.model.name,
        "steps": total_steps, "epochs": num_epochs, "split_sizes": splits.sizes(),
        "wall_time_seconds_this_call": time.time() - start_time,
        "device_kind": jax.devices()[0].device_kind, "device_count": mesh.devices.size,
        "process_count": jax.process_count(), "versions": _library_versions(),
    }
    if val_data is not None:
        val = summarize_eval(*evaluate(state, val_data))
        results.update({"val_accuracy": val["accuracy"], "val_selectivity": val["selectivity"]})
    per_unit = jax.device_get(test_stats.per_unit())
    if jax.process_index() == 0:
        np.savez(os.path.join(workdir, SELECTIVITY_FILE), **{k: np.asarray(per_unit[k]) for k in layer_names})
        write_json(results_path, results)
    log(f"test accuracy {results['test_accuracy']:.4f}, test selectivity {results['test_selectivity']:.4f}; "
        f"results in {results_path}")
    return results
