"""Surviving faults: SIGKILL and restart, atomic writes, the NaN guard, bitwise determinism.

The subprocess tests run the real `cbcn train` (venv python, Keras 2, no GPU) on the packaged
digits with a tiny CBCN ResNet18 (kernel stage 2-2-2-2, K = 2): about a second per epoch.
"""
import errno
import os
import signal
import subprocess
import sys
import time

import cbcn_tf  # noqa: F401  (Keras 2 before tensorflow)
import numpy as np
import pytest
import tensorflow as tf

from cbcn_tf import cli
from cbcn_tf import config as config_lib
from cbcn_tf import data as data_lib
from cbcn_tf import files
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


# --- atomic writes ---------------------------------------------------------------------------


def _leftovers(folder):
    return [name for name in os.listdir(folder) if ".tmp" in name]


def _failing_save(self, path, *args, **kwargs):
    with open(path, "wb") as handle:
        handle.write(b"\x89HDF\r\n\x1a\n half a model")  # a truncated HDF5 file
    raise OSError(errno.ENOSPC, "No space left on device")


def test_interrupted_model_write_keeps_the_previous_model(tmp_path, monkeypatch):
    model = training.model_from_kwargs("cbcn_lenet", {"input_shape": [16, 16, 1],
                                                      "orientations": 2,
                                                      "kernel_stage": [2, 2, 2, 2]})
    path = tmp_path / "model.h5"
    monkeypatch.setattr(tf.keras.Model, "save", _failing_save)
    with pytest.raises(OSError, match="Could not write .*model.h5: No space left on device"):
        training.save_model(model, path)
    assert not path.exists() and _leftovers(tmp_path) == []

    monkeypatch.undo()
    training.save_model(model, path)
    before = path.read_bytes()
    monkeypatch.setattr(tf.keras.Model, "save", _failing_save)
    with pytest.raises(OSError, match="disk is full"):
        training.save_model(model, path)
    assert path.read_bytes() == before and _leftovers(tmp_path) == []
    assert training.load_model(path).count_params() == model.count_params()


@pytest.mark.parametrize("writer", ["config", "summary", "history"])
def test_interrupted_report_writes_leave_the_target_unchanged(writer, tmp_path, monkeypatch):
    model = tf.keras.Sequential([tf.keras.layers.Dense(2, input_shape=(3,))])
    path = tmp_path / {"config": "config.yaml", "summary": "summary.txt",
                       "history": "history.csv"}[writer]
    write = {
        "config": lambda: config_lib.save_config(config_lib.TrainConfig(epochs=3), path),
        "summary": lambda: training.write_summary(model, path),
        "history": lambda: files.write_csv(path, [{"epoch": 0, "loss": 1.0}] * 3),
    }[writer]
    path.write_text("previous complete version\n")
    real_open = open

    class HalfWriter:  # writes a few bytes, then the disk is full
        def __init__(self, handle):
            self.handle = handle

        def write(self, text):
            self.handle.write(text[:5])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    def failing_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        return HalfWriter(handle) if "w" in mode and ".tmp" in str(file) else handle

    monkeypatch.setattr("builtins.open", failing_open)
    with pytest.raises(OSError, match="Could not write"):
        write()
    monkeypatch.undo()
    assert path.read_text() == "previous complete version\n"
    assert _leftovers(tmp_path) == []
    path.unlink()
    monkeypatch.setattr("builtins.open", failing_open)
    with pytest.raises(OSError):
        write()
    assert not path.exists() and _leftovers(tmp_path) == []


# --- the NaN guard ---------------------------------------------------------------------------


def test_nan_in_the_data_stops_training_with_advice(tmp_path, monkeypatch, tiny_config):
    real = data_lib.load_dataset

    def with_nan(*args, **kwargs):
        ds = real(*args, **kwargs)
        if not kwargs.get("training"):
            return ds
        return ds.map(lambda x, y: (x * float("nan"), y))

    monkeypatch.setattr(data_lib, "load_dataset", with_nan)
    run = tmp_path / "run"
    with pytest.raises(training.TrainingDiverged) as info:
        training.train(tiny_config("epochs=2"), str(run), verbose=0)
    message = str(info.value)
    assert "loss became nan at epoch 1, step 1" in message
    assert "lower learning rate" in message and "e.g. --set lr=0.0005" in message
    assert "check the data for NaN/Inf values and its normalisation" in message
    assert not (run / "model.h5").exists()  # a diverged model is not saved
    assert issubclass(training.NaNGuard, tf.keras.callbacks.TerminateOnNaN)


def test_huge_learning_rate_fails_with_one_error_line(tmp_path, capsys, train_cli):
    """The CLI prints the guard's advice as its error line (exit code 2)."""
    code = train_cli(tmp_path / "run", "epochs=3", "optimizer=sgd", "lr=1e38",
                     "model_kwargs.binary=false", "model_kwargs.dropout=0")
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("cbcn: error: Training diverged: the loss became") and \
        "Try a lower learning rate (lr is 1e+38; e.g. --set lr=1e+37)" in err
    assert not (tmp_path / "run" / "model.h5").exists()
