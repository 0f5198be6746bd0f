"""Exact resume of a CBCN ResNet18 with Adam: two same-seed `cbcn train --deterministic` runs
are bitwise identical, and one killed with SIGKILL after its first epoch and started again
with the same command continues with the optimizer's step counter and moments, ending with the
uninterrupted run's history and weights. test_resume.py kills a LeNet at chosen steps.

The subprocess tests run the real `cbcn train` (venv python, Keras 2, no GPU) on the packaged
digits with a tiny CBCN ResNet18 (kernel stage 2-2-2-2, K = 2): about a second per epoch.
"""
import signal
import subprocess
import sys
import time

import cbcn_tf  # noqa: F401  (Keras 2 before tensorflow)
import numpy as np
import pytest
import tensorflow as tf

from cbcn_tf import cli
from cbcn_tf import training

EPOCHS, STEPS = 4, 40
SETS = ["model=cbcn_resnet18", "model_kwargs.kernel_stage=[2, 2, 2, 2]",
        "model_kwargs.orientations=2", "batch_size=16", f"steps_per_epoch={STEPS}",
        f"epochs={EPOCHS}", "lr_milestones=[2]", "tensorboard=false"]
ITERATIONS_KEY = "model/optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"


def _command(output):
    return [sys.executable, "-m", "cbcn_tf.cli", "train", "--config", "digits_demo",
            "--output", str(output), "--verbose", "2", "--seed", "1", "--deterministic",
            *[a for s in SETS for a in ("--set", s)]]


def _start(output, log, env):
    return subprocess.Popen(_command(output), env=env, stdout=log, stderr=subprocess.STDOUT)


def _weights(run):
    return training.load_model(run).get_weights()


def _iterations(run):
    latest = tf.train.latest_checkpoint(str(run / "backup" / "chief"))
    return int(tf.train.load_variable(latest, ITERATIONS_KEY))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, subprocess_env):
    """Two uninterrupted runs and one killed with SIGKILL after >= 1 epoch, then restarted."""
    root = tmp_path_factory.mktemp("fault")
    names = ("a", "b", "killed")
    logs = {name: open(root / f"{name}.log", "w") for name in names}
    procs = {}
    killed_rows = None
    try:
        procs = {name: _start(root / name, logs[name], subprocess_env()) for name in names}
        history = root / "killed" / "history.csv"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and procs["killed"].poll() is None:
            # >= 1 epoch in history.csv and its backup complete (the checkpoint index file
            # is written last, atomically).
            if history.exists() and len(training.read_history(history)) >= 1 and \
                    (root / "killed" / "backup" / "chief" / "checkpoint").exists():
                procs["killed"].send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
        assert procs["killed"].wait(timeout=60) == -signal.SIGKILL, "not killed mid-run"
        killed_rows = training.read_history(history)
        assert not (root / "killed" / "model.h5").exists(), "the run finished before the kill"
        for name in ("a", "b"):
            assert procs[name].wait(timeout=300) == 0, (root / f"{name}.log").read_text()[-3000:]
        # The same command again: it must continue the interrupted run.
        with open(root / "restart.log", "w") as log:
            procs["restart"] = _start(root / "killed", log, subprocess_env())
            assert procs["restart"].wait(timeout=300) == 0, \
                (root / "restart.log").read_text()[-3000:]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in logs.values():
            log.close()
    return root, killed_rows


@pytest.mark.slow  # four ResNet18 `cbcn train` processes (runs)
def test_same_seed_runs_are_bitwise_identical(runs):
    root, _ = runs
    for a, b in zip(_weights(root / "a"), _weights(root / "b")):
        np.testing.assert_array_equal(a, b)
    assert training.read_history(root / "a" / "history.csv") == \
        training.read_history(root / "b" / "history.csv")


@pytest.mark.slow  # four ResNet18 `cbcn train` processes (runs)
def test_killed_run_restarted_with_the_same_command_continues_exactly(runs):
    root, killed_rows = runs
    log = (root / "restart.log").read_text()
    # It resumed: it did not run epoch 1 again, it started after the killed run's backup.
    assert "Resuming" in log and "Epoch 1/4" not in log and "Epoch 4/4" in log
    history = training.read_history(root / "killed" / "history.csv")
    reference = training.read_history(root / "a" / "history.csv")
    # No completed epoch lost or repeated, and each equal to the uninterrupted run's.
    assert [row["epoch"] for row in history] == list(range(EPOCHS))
    assert history[:len(killed_rows)] == killed_rows
    assert history == reference
    # The optimizer state came back: its step counter continued (not restarted at 0) ...
    assert _iterations(root / "killed") == _iterations(root / "a") == EPOCHS * STEPS
    # ... and so did Adam's moments and the weights: the final weights are bitwise equal.
    for resumed, uninterrupted in zip(_weights(root / "killed"), _weights(root / "a")):
        np.testing.assert_array_equal(resumed, uninterrupted)


@pytest.mark.slow  # four ResNet18 `cbcn train` processes (runs)
def test_restart_of_a_finished_run_still_needs_resume(runs, capsys):
    root, _ = runs
    code = cli.main(_command(root / "a")[3:])
    assert code == 2
    assert "already holds a training run; pass --resume" in capsys.readouterr().err
