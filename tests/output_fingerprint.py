"""Fingerprints of everything the commands write on tiny inputs, to show that a refactor left every output bitwise
unchanged.

    python tests/output_fingerprint.py --out /tmp/before.json     # on the old code
    python tests/output_fingerprint.py --out /tmp/after.json      # on the new code
    python tests/output_fingerprint.py --compare /tmp/before.json /tmp/after.json

Runs, in a temporary directory, the commands as a user does: a tiny training run (alpha -1), the tiny sweep
vmapped and serial (alphas -2, 0, 2, the tests' settings), every
analysis on the serial sweep with the tests' small settings, and the sweep report. Then records the SHA-256 of every
file written (JSON files without their wall-clock ``seconds``), except those whose bits legitimately vary between two
runs of the same code: wall-clock timings, locks, and orbax's checkpoint metadata (timestamps). Checkpointed arrays are compared through what they produce
(results, selectivity.npz, the analyses' outputs). About 6 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = "configs/quickstart.py:tiny"
SWEEP_FLAGS = ("--config.learning_rate=0.002", "--config.sweep.alphas=(-2.0,0.0,2.0)", "--config.sweep.seeds=(0,)")
ANALYSIS_FLAGS = (
    "--config.num_examples=40", "--config.batch_size=40", "--config.layers=('stem/relu','stage3_block2/out')",
    "--config.basis.steps=5", "--config.rotation.num_t=3", "--config.rs.steps=4", "--config.rs.max_units=4",
    "--config.rs.grid_units=2", "--config.ablation.num_points=3",
    "--config.corruptions.names=('gaussian_noise','contrast')", "--config.corruptions.severities=(1,3)",
    "--config.attacks.attacks=('pgd',)", "--config.attacks.norms=('linf',)",
    f"--config.attacks.linf_epsilons=({4 / 255!r},)", "--config.attacks.pgd_steps=(2,)",
    "--config.gradients.num_examples=20", "--config.gradients.max_units=4",
    "--config.dimensionality.corruptions=('gaussian_noise','contrast')",
    f"--config.dimensionality.epsilon={4 / 255!r}", "--config.dimensionality.pgd_steps=2")
VARYING = {"timing.jsonl", ".lock", ".lock.owner", "_CHECKPOINT_METADATA", "_METADATA", "manifest.ocdbt",
           "matplotlibrc"}
VARYING_DIRS = {"checkpoints", "tensorboard"}  # TensorBoard event files hold wall-clock times


def command(*args: str, env: dict[str, str]) -> None:
    """Runs ``python -m <args>`` from the repository root; stops with its output when it fails."""
    done = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"error: {' '.join(args[:3])} failed:\n{done.stderr[-3000:]}")
    print(f"ran {' '.join(args[:5])} ...", flush=True)


def produce(directory: pathlib.Path) -> None:
    """Everything the fingerprint covers, written under ``directory``; figures without their date and with fixed
    SVG ids (matplotlib's ``SOURCE_DATE_EPOCH`` and ``svg.hashsalt``)."""
    (directory / "matplotlibrc").write_text("svg.hashsalt: output_fingerprint\n")
    env = {**os.environ, "SOURCE_DATE_EPOCH": "0", "MATPLOTLIBRC": str(directory / "matplotlibrc")}
    command("experiments.train", "--config", TINY, "--workdir", str(directory / "run"), "--config.alpha=-1.0",
            env=env)
    for mode in ("vmap", "serial"):
        command("experiments.sweep", "--config", TINY, "--workdir", str(directory / mode), f"--mode={mode}",
                *SWEEP_FLAGS, env=env)
    command("experiments.analyze", "--workdir", str(directory / "serial"), "--analysis", "all", *ANALYSIS_FLAGS,
            env=env)
    command("experiments.report", "--sweep", str(directory / "vmap"), env=env)


def _without(value, keys: frozenset[str]):
    """Parsed JSON without the entries named ``keys`` at any depth."""
    if isinstance(value, dict):
        return {key: _without(item, keys) for key, item in value.items() if key not in keys}
    if isinstance(value, list):
        return [_without(item, keys) for item in value]
    return value


def file_digest(path: pathlib.Path, directory: pathlib.Path, ignored: frozenset[str] = frozenset()) -> str:
    """sha256 of a file's bytes; of a JSON file's content without wall-clock seconds (and the ``ignored`` keys); of
    a report with the production directory's path and the wall-clock durations replaced."""
    data = path.read_bytes()
    if path.suffix == ".md":  # the sweep report's training times are wall-clock
        data = re.sub(rb"\b\d+(?:h\d\dm|m\d\ds)\b", b"<duration>", data.replace(str(directory).encode(), b"<directory>"))
    if path.suffix == ".json":
        data = json.dumps(_without(json.loads(data), frozenset({"seconds"}) | ignored), sort_keys=True).encode()
    return hashlib.sha256(data).hexdigest()


def fingerprint(directory: pathlib.Path, ignored: frozenset[str] = frozenset()) -> dict[str, str]:
    """{relative path: sha256} of every file under ``directory`` but the varying ones."""
    hashes = {}
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d not in VARYING_DIRS)
        for name in sorted(files):
            if name not in VARYING:
                path = pathlib.Path(root) / name
                hashes[str(path.relative_to(directory))] = file_digest(path, directory, ignored)
    return hashes


def compare(before: dict[str, str], after: dict[str, str]) -> int:
    """Prints what differs; 0 when nothing does."""
    missing, added = sorted(set(before) - set(after)), sorted(set(after) - set(before))
    changed = sorted(name for name in set(before) & set(after) if before[name] != after[name])
    for label, names in (("missing", missing), ("added", added), ("changed", changed)):
        for name in names:
            print(f"{label}: {name}")
    print(f"{len(before)} files before, {len(after)} after: {len(missing)} missing, {len(added)} added, "
          f"{len(changed)} changed")
    return 1 if missing or added or changed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="write the fingerprint of a fresh production here (JSON)")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"), help="compare two fingerprints")
    parser.add_argument("--ignore", action="append", default=[], metavar="KEY",
                        help="leave JSON entries named KEY out (a field the change adds on purpose, e.g. "
                             "schema_version); repeatable")
    parser.add_argument("--keep", help="produce into this new directory and keep it (default: a temporary one)")
    args = parser.parse_args()
    if args.compare:
        return compare(*(json.loads(pathlib.Path(path).read_text()) for path in args.compare))
    if not args.out:
        parser.error("pass --out FILE or --compare BEFORE AFTER")
    with (contextlib.nullcontext(args.keep) if args.keep else
          tempfile.TemporaryDirectory(prefix="selectivity_jax_fingerprint_")) as directory:
        pathlib.Path(directory).mkdir(parents=True, exist_ok=True)
        produce(pathlib.Path(directory))
        hashes = fingerprint(pathlib.Path(directory), frozenset(args.ignore))
    pathlib.Path(args.out).write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
    print(f"{len(hashes)} files fingerprinted into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
