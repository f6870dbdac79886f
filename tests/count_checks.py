"""Runs one command (``python tests/count_checks.py experiments.sweep --config ...``) with the door's checks
wrapped to count their calls, and prints the counts as one JSON line at exit (tests/test_check_once.py).

Each check is replaced by a counting wrapper in every module loaded so far that holds it, before the command's
modules are imported, so every call site counts.
"""

import atexit
import collections
import json
import pathlib
import runpy
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # experiments/ and configs/, as with python -m

from selectivity_jax import data, parallel, rundir  # noqa: E402
from selectivity_jax.cpu import settings  # noqa: E402
from selectivity_jax.train import validation  # noqa: E402

CALLS: collections.Counter = collections.Counter()


def counted(module, name, key=lambda *args, **kwargs: ""):
    """Replaces ``module.name`` by a wrapper that counts each call under ``name[key(args)]``."""
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        label = key(*args, **kwargs)
        CALLS[f"{name}[{label}]" if label else name] += 1
        return original(*args, **kwargs)
    for loaded in list(sys.modules.values()):  # modules that bound the original already
        for attribute, value in list(vars(loaded).items()) if loaded is not None else []:
            if value is original:
                setattr(loaded, attribute, wrapper)
    return wrapper


counted(validation, "validate_config")
counted(rundir, "check_workdir", key=lambda workdir, *a, **k: workdir.rstrip("/").split("/")[-1])
counted(data, "check_available")
counted(parallel, "maybe_initialize_distributed")
counted(parallel, "check_batch_size", key=lambda *a, what="batch_size", **k: what)
counted(settings, "use_config")
atexit.register(lambda: print("CHECK_COUNTS " + json.dumps(dict(sorted(CALLS.items()))), flush=True))

module, sys.argv = sys.argv[1], [sys.argv[1], *sys.argv[2:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
