"""Planted bugs, one at a time, against the tests that cover them: each must make at least one test fail.

    python tests/mutants.py                 # every mutant (about 20 minutes on 2 cores)
    python tests/mutants.py --only pwcca_uniform_weights,alpha_sign_flipped
    python tests/mutants.py --list

A mutant is a small, plausible bug: one exact text replacement in one file of the library (the text must occur
exactly once). The script copies the repository's files (tracked and untracked, not ignored) to a temporary
directory, plants each mutant there in turn, runs its covering tests with ``pytest -x`` (the copy first on the
import path, so the planted code is what runs) and reports it KILLED (a test failed) or SURVIVED. The working tree is
never touched. Exit status 1 when a mutant survived.

The list starts with the planted bugs of the test audit (issue 25) and adds bugs in the selectivity index, the
training step and the analyses' math. A mutant that survives names a test to write.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT_S = 1200


@dataclasses.dataclass(frozen=True)
class Mutant:
    name: str
    path: str          # relative to the repository root
    old: str           # occurs exactly once in the file
    new: str
    tests: tuple[str, ...]  # pytest arguments (files, node ids, -k expressions)


MUTANTS = (
    # -- the audit's planted bugs --
    Mutant("pwcca_uniform_weights", "selectivity_jax/measures/similarity.py",
           "weights = np.sum(np.abs(variates.T @ units), axis=1)", "weights = np.ones(rho.size)",
           ("tests/test_similarity.py",)),
    Mutant("pwcca_weights_from_other_side", "selectivity_jax/measures/similarity.py",
           'variates, units = (variates_x, x) if weights_from == "x" else (variates_y, y)',
           'variates, units = (variates_y, y) if weights_from == "x" else (variates_x, x)',
           ("tests/test_similarity.py",)),
    Mutant("ablation_every_curve_decreasing", "selectivity_jax/measures/ablation.py",
           "masks = [cumulative_masks(orders[name], counts) for name in ORDERS]",
           'masks = [cumulative_masks(orders["decreasing"], counts) for name in ORDERS]',
           ("tests/test_ablation.py",)),
    Mutant("speckle_noise_additive", "selectivity_jax/data/corruptions.py",
           "return images + images * std * rng.standard_normal(images.shape, dtype=np.float32)",
           "return images + std * rng.standard_normal(images.shape, dtype=np.float32)",
           ("tests/test_corruptions_reference.py", "tests/test_corruptions.py")),
    Mutant("gaussian_noise_constant", "selectivity_jax/data/corruptions.py",
           '"cifar10": (0.04, 0.06, 0.08, 0.09, 0.10)', '"cifar10": (0.04, 0.06, 0.08, 0.09, 0.11)',
           ("tests/test_corruptions_reference.py", "tests/test_corruptions.py")),
    Mutant("already_finished_check_disabled", "selectivity_jax/train/loop.py",
           "if not overwrite and all(map(rundir.is_finished, workdirs)):", "if False:",
           ("tests/test_experiments.py::test_train_cli_quickstart",)),
    Mutant("alpha_sign_flipped", "selectivity_jax/train/step.py",
           "loss = ce - alpha * selectivity if spec.selectivity_term else ce",
           "loss = ce + alpha * selectivity if spec.selectivity_term else ce",
           ("tests/test_sweep.py::test_alpha_acts_in_its_direction_in_groups_and_alone",)),
    Mutant("selectivity_rest_mean_off_by_one", "selectivity_jax/selectivity.py",
           "mu_rest = others_sum / jnp.maximum(num_present - 1, 1).astype(means.dtype)",
           "mu_rest = others_sum / jnp.maximum(num_present, 1).astype(means.dtype)",
           ("tests/test_selectivity.py",)),
    Mutant("selectivity_sign", "selectivity_jax/selectivity.py",
           "return jnp.where(undefined, 0.0, (mu_max - mu_rest) / safe_denominator)",
           "return jnp.where(undefined, 0.0, (mu_rest - mu_max) / safe_denominator)",
           ("tests/test_selectivity.py",)),
    # -- the selectivity index --
    Mutant("selectivity_denominator_without_rest", "selectivity_jax/selectivity.py",
           "denominator = mu_max + mu_rest + eps", "denominator = mu_max + eps", ("tests/test_selectivity.py",)),
    Mutant("selectivity_absent_classes_in_rest", "selectivity_jax/selectivity.py",
           "others_sum = jnp.sum(jnp.where(present[:, None], means, 0.0), axis=0) - mu_max",
           "others_sum = jnp.sum(means, axis=0) - mu_max\n    num_present = jnp.asarray(means.shape[0])",
           ("tests/test_selectivity.py",)),
    Mutant("selectivity_mask_ignored", "selectivity_jax/selectivity.py",
           "weights = weights * mask.astype(jnp.float32)[:, None]", "weights = weights",
           ("tests/test_selectivity.py",)),
    Mutant("selectivity_not_reduced_over_devices", "selectivity_jax/selectivity.py",
           "sums, counts = jax.lax.psum((sums, counts), axis_name)", "sums, counts = sums, counts",
           ("tests/test_selectivity_parallel.py",)),
    Mutant("network_selectivity_max_over_layers", "selectivity_jax/selectivity.py",
           "return jnp.mean(jnp.stack([jnp.mean(si) for si in per_unit.values()]))",
           "return jnp.max(jnp.stack([jnp.mean(si) for si in per_unit.values()]))",
           ("tests/test_selectivity.py",)),
    # -- the training step --
    Mutant("alpha_warmup_ramp_off_by_one", "selectivity_jax/train/step.py",
           "return alpha * jnp.minimum(1.0, (step + 1) / warmup_steps)",
           "return alpha * jnp.minimum(1.0, step / warmup_steps)", ("tests/test_state.py",)),
    Mutant("weight_decay_on_every_parameter", "selectivity_jax/train/state.py",
           "return jax.tree.map(lambda p: p.ndim > 1, params)", "return jax.tree.map(lambda p: True, params)",
           ("tests/test_state.py",)),
    Mutant("normalize_multiplies_by_std", "selectivity_jax/data/on_device.py",
           "return ((x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)).astype(dtype)",
           "return ((x - jnp.asarray(mean, jnp.float32)) * jnp.asarray(std, jnp.float32)).astype(dtype)",
           ("tests/test_on_device.py", "tests/test_torch_reference.py")),
    Mutant("crop_offsets_one_short", "selectivity_jax/data/on_device.py",
           "offsets = jax.random.randint(crop_key, (batch, 2), 0, 2 * padding + 1)",
           "offsets = jax.random.randint(crop_key, (batch, 2), 0, 2 * padding)", ("tests/test_on_device.py",)),
    Mutant("lr_decay_boundaries_ignored", "selectivity_jax/train/state.py",
           "boundaries = {int(round(f * total_steps)): decay_factor for f in decay_at}", "boundaries = {}",
           ("tests/test_state.py",)),
    # -- the analyses' math --
    Mutant("cka_feature_path_squares_wrong_norm", "selectivity_jax/measures/similarity.py",
           "cross = np.linalg.norm(y.T @ x) ** 2", "cross = np.linalg.norm(y.T @ x)", ("tests/test_similarity.py",)),
    Mutant("participation_ratio_inverted", "selectivity_jax/measures/dimensionality.py",
           "return float(np.sum(variances) ** 2 / squares) if squares > 0 else 0.0",
           "return float(squares / np.sum(variances) ** 2) if squares > 0 else 0.0",
           ("tests/test_dimensionality.py",)),
    Mutant("linf_projection_ignores_epsilon", "selectivity_jax/measures/attacks.py",
           "return jnp.clip(candidate, jnp.maximum(clean - epsilon, 0.0), jnp.minimum(clean + epsilon, 1.0))",
           "return jnp.clip(candidate, 0.0, 1.0)", ("tests/test_attacks.py",)),
    Mutant("l2_ascent_not_normalized", "selectivity_jax/measures/attacks.py",
           "return grad / _broadcast_per_example(jnp.where(grad_norm > 0, grad_norm, 1.0), grad)",
           "return grad", ("tests/test_attacks.py",)),
    Mutant("gradient_cv_uses_variance", "selectivity_jax/measures/gradients.py",
           "std = values.std(axis=axis)", "std = values.var(axis=axis)", ("tests/test_gradients.py",)),
    Mutant("haar_rotation_without_sign_fix", "selectivity_jax/measures/rotation.py",
           "q = q * signs[None, :]", "q = q", ("tests/test_rotation.py",)),
    Mutant("contrast_mean_over_channels_too", "selectivity_jax/data/corruptions.py",
           "means = images.mean(axis=(1, 2), keepdims=True)", "means = images.mean(axis=(1, 2, 3), keepdims=True)",
           ("tests/test_corruptions_reference.py", "tests/test_corruptions.py")),
)


def copy_repository(destination: pathlib.Path) -> None:
    """The repository's files (tracked and untracked, not ignored) copied to ``destination``."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


def run_mutant(mutant: Mutant, tree: pathlib.Path) -> tuple[bool, str, float]:
    """Plants ``mutant`` in ``tree``, runs its tests, restores the file: (killed, pytest's last line, seconds)."""
    path = tree / mutant.path
    original = path.read_text()
    if original.count(mutant.old) != 1:
        raise SystemExit(f"error: mutant {mutant.name}: the text to replace occurs {original.count(mutant.old)} "
                         f"times in {mutant.path}, not once")
    path.write_text(original.replace(mutant.old, mutant.new))
    start = time.time()
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *mutant.tests],
                              cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True,
                              timeout=TIMEOUT_S)
        lines = done.stdout.strip().splitlines()
        return done.returncode != 0, lines[-1] if lines else done.stderr.strip()[-200:], time.time() - start
    except subprocess.TimeoutExpired:
        return True, f"timed out after {TIMEOUT_S} s", time.time() - start
    finally:
        path.write_text(original)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="", help="comma-separated mutant names (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args()
    names = [name for name in args.only.split(",") if name]
    unknown = sorted(set(names) - {m.name for m in MUTANTS})
    if unknown:
        print(f"error: unknown mutants {unknown}; see --list", file=sys.stderr)
        return 2
    chosen = [m for m in MUTANTS if not names or m.name in names]
    if args.list:
        for mutant in chosen:
            print(f"{mutant.name:40s} {mutant.path}  ->  {' '.join(mutant.tests)}")
        return 0
    survived = []
    with tempfile.TemporaryDirectory(prefix="selectivity_jax_mutants_") as directory:
        tree = pathlib.Path(directory)
        copy_repository(tree)
        print("| mutant | file | result | tests' last line | seconds |\n| --- | --- | --- | --- | --- |", flush=True)
        for mutant in chosen:
            killed, last_line, seconds = run_mutant(mutant, tree)
            survived += [] if killed else [mutant.name]
            print(f"| {mutant.name} | {mutant.path} | {'KILLED' if killed else 'SURVIVED'} | {last_line} | "
                  f"{seconds:.0f} |", flush=True)
    print(f"{len(chosen) - len(survived)} of {len(chosen)} mutants killed"
          + (f"; survived: {', '.join(survived)}" if survived else ""))
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
