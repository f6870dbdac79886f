"""Runs many command lines of one entry point, each in a process forked after the imports, as the shell would run
each (a subprocess per case would spend most of the test's time importing JAX):

    python tests/cli_cases.py MODULE CASES.json RESULTS.json

CASES.json: a list of argument lists; RESULTS.json: per case {"exit": code, "stderr": text}. Each case runs the
module in a fresh fork (its flags defined with the case's command line, no JAX backend started), its stderr captured
at the file-descriptor level; an exception escaping ``cli.run`` is reported as exit None with its traceback.
"""

import importlib
import json
import os
import sys
import tempfile
import traceback


def run_case(module_name: str, argv: list[str]) -> dict:
    with tempfile.TemporaryFile(mode="w+") as captured:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: the command, as from the shell
            os.dup2(captured.fileno(), 2)
            code = None
            try:
                sys.argv = [module_name] + argv  # config_flags reads the command line when the flags are defined
                module = importlib.import_module(module_name)
                module.cli.run(module.main, argv=sys.argv)
                code = 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            except BaseException:  # noqa: BLE001 - reported to the test as a failure with its traceback
                traceback.print_exc()
                code = 255
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        captured.seek(0)
        code = os.waitstatus_to_exitcode(status)
        return {"exit": None if code == 255 else code, "stderr": captured.read()}


def main() -> None:
    module_name, cases_path, results_path = sys.argv[1:]
    for slow in ("jax", "flax.linen", "optax", "orbax.checkpoint", "selectivity_jax.train.loop", "experiments.cli"):
        importlib.import_module(slow)  # once, before the forks (the command's own module is imported in each)
    with open(cases_path) as f:
        cases = json.load(f)
    results = [run_case(module_name, argv) for argv in cases]
    with open(results_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
