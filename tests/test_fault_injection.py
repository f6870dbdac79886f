"""Fault injection (docs/reliability.md): kill -9 and SIGTERM at the loop's named moments of a run and of a sweep
(selectivity_jax/faults.py), each followed by the same command, ending with the files of an uninterrupted run."""

import json

import pytest

from helpers import TINY_SWEEP_ALPHAS, assert_same_run_files, expect_outcome, run_command
from selectivity_jax.faults import POINTS
from selectivity_jax.rundir import run_dirname

TINY = "configs/quickstart.py:tiny"  # 6 steps per epoch, batch 40, ResNet20 at width 4, one device


# Each process of the chain resumes the previous one's directory and is stopped at the next moment; the points
# follow a run's progress (6 steps per epoch, checkpoints at 6 and 12). 11 kills and 2 SIGTERMs (Ctrl-C
# is tests/test_reliability.py's CTRL_C).
RUN_CHAIN = (
    "term:start:1",                       # SIGTERM at start-up: nothing written
    "kill:locked:1",                      # directory locked, config.json not yet written
    "kill:config_written:1",              # config.json only
    "kill:step:3",                        # mid-epoch 1, no checkpoint
    "term:step:2,kill:partial_epoch:1",   # killed while a SIGTERM's save was under way (metrics stored, no checkpoint)
    "term:step:5",                        # SIGTERM at step 5: checkpoint 5 and the epoch's metrics so far
    "kill:restored:1",                    # resumed from 5, killed before a step
    "kill:metrics_row:1",                 # epoch 1's row written, its checkpoint not
    "kill:checkpoint_save:1",             # inside orbax's temporary directory of checkpoint 6
    "kill:checkpoint_saved:2",            # checkpoint 6 written; killed at epoch 2's end before pruning 5
    "kill:step:2",                        # mid-epoch 2
    "kill:checkpoint_save:1",             # inside checkpoint 12's write
    "kill:selectivity_written:1",         # selectivity.npz written, results.json not
)


def test_fault_points_are_the_loops():
    assert {fault.split(":")[1] for chain in RUN_CHAIN for fault in chain.split(",")} <= set(POINTS)
    assert sum(chain.split(",")[-1].startswith("kill") for chain in RUN_CHAIN) >= 10


def _train(workdir, fault=None):
    return run_command("experiments.train", "--config", TINY, "--workdir", str(workdir), "--config.num_epochs=2",
                       fault=fault)


def test_kill_and_sigterm_anywhere_resume_to_the_same_files(tmp_path):
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    expect_outcome(_train(reference))
    left_inside_orbax = False
    for fault in RUN_CHAIN:
        result = _train(resumed, fault)
        expect_outcome(result, fault)
        if fault == "term:start:1":
            assert not resumed.exists()  # stopped before anything was written
        if fault.startswith("kill:checkpoint_save"):
            left_inside_orbax |= any("tmp" in p.name for p in (resumed / "checkpoints").iterdir())
    assert left_inside_orbax  # the kills did land inside orbax's temporary checkpoint directories
    expect_outcome(_train(resumed))
    assert_same_run_files(str(resumed), str(reference))
    assert json.loads((resumed / "results.json").read_text()) == json.loads((reference / "results.json").read_text())


@pytest.mark.parametrize("mode,faults", [
    ("serial", ("kill:checkpoint_save:2",)),              # killed writing the second run's checkpoint
    ("vmap", ("kill:checkpoint_save:2", "term:step:3")),  # killed mid-group, between the models' checkpoints
])
def test_sweep_killed_mid_group_resumes_to_the_same_files(tmp_path, tiny_sweeps, mode, faults):
    """The sweep of conftest's ``tiny_sweeps`` (trained uninterrupted, in the test process) from the command line,
    killed and resumed."""
    def sweep(fault=None):
        return run_command("experiments.sweep", "--config", TINY, "--workdir", str(tmp_path / "sweep"),
                           f"--mode={mode}", f"--config.sweep.alphas={TINY_SWEEP_ALPHAS}",
                           "--config.learning_rate=0.002", fault=fault)

    for fault in faults:
        expect_outcome(sweep(fault), fault)
    expect_outcome(sweep())
    reference = tiny_sweeps[0] / mode
    for alpha in TINY_SWEEP_ALPHAS:
        name = run_dirname(alpha, 0)
        assert_same_run_files(str(tmp_path / "sweep" / name), str(reference / name))
