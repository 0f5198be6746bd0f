"""Exact resume and streamed epochs.

`cbcn train --seed 3 --deterministic` killed with SIGKILL during its first epoch, in the middle
of the run and during its last epoch, then started again with the same command, must end with
the history.csv rows and model.h5 weights of an uninterrupted run. The model is a tiny CBCN
LeNet, whose dropout layer draws random masks at every step. The runs start in two batches
(the uninterrupted one and the three to kill, then the three restarts), so the file takes
about two `cbcn train` runs of wall time; the other tests are in-process and take seconds.
"""
import re
import signal
import subprocess
import sys
import threading
import time

import cbcn_tf  # noqa: F401  (Keras 2 before tensorflow)
import numpy as np
import pytest
import tensorflow as tf

from cbcn_tf import config as config_lib
from cbcn_tf import training
from cbcn_tf.training.callbacks import EpochSeededRandomness, HistoryLogger

EPOCHS, STEPS = 3, 12
SETS = ["model=cbcn_lenet", "model_kwargs.kernel_stage=[2, 2, 2, 2]",
        "model_kwargs.orientations=2", "batch_size=16", f"steps_per_epoch={STEPS}",
        f"epochs={EPOCHS}", "tensorboard=false"]
# Where each run is killed: (epoch, step), both counted from 1, as Keras' progress bar shows.
# The bar prints an epoch's first step, then at most every 0.05 s: killing at the first step
# it shows leaves the rest of the epoch as margin for this test to react.
KILLS = {"first_epoch": (1, 1), "middle": (2, 1), "last_epoch": (EPOCHS, 1)}
TIMEOUT = 600


def _command(output, *sets):
    return [sys.executable, "-m", "cbcn_tf.cli", "train", "--config", "digits_demo",
            "--output", str(output), "--verbose", "1", "--seed", "3", "--deterministic",
            *[a for s in (*SETS, *sets) for a in ("--set", s)]]


class _Run:
    """A `cbcn train` subprocess whose progress (epoch, step) is read from its progress bar."""

    def __init__(self, command, env, log):
        self.proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.log, self.text, self.progress = log, "", (0, 0)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        with open(self.log, "wb") as log:
            for chunk in iter(lambda: self.proc.stdout.read1(4096), b""):
                log.write(chunk)
                self.text += chunk.decode(errors="replace")
                epochs = re.findall(r"Epoch (\d+)/\d+", self.text)
                if epochs:
                    tail = self.text[self.text.rindex(f"Epoch {epochs[-1]}/"):]
                    steps = re.findall(rf"(\d+)/{STEPS} \[", tail)
                    self.progress = (int(epochs[-1]), int(steps[-1]) if steps else 0)

    def wait(self):
        try:
            code = self.proc.wait(timeout=TIMEOUT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(timeout=10)
        return code


@pytest.fixture(scope="module")
def runs(tmp_path_factory, subprocess_env):
    """An uninterrupted run, and one run per `KILLS` point killed there and restarted.

    Also returns the number of history rows each killed run had when it was killed, and the
    epochs each restart ran (from Keras' "Epoch k/N" lines).
    """
    root = tmp_path_factory.mktemp("resume")
    env = subprocess_env(PYTHONUNBUFFERED="1")
    reference = _Run(_command(root / "reference"), env, root / "reference.log")
    killed = {name: _Run(_command(root / name), env, root / f"{name}.log") for name in KILLS}
    started = [reference, *killed.values()]
    rows_at_kill = {}
    try:
        deadline = time.monotonic() + TIMEOUT
        waiting = dict(killed)
        while waiting and time.monotonic() < deadline:
            for name, run in list(waiting.items()):
                # SIGKILL once the progress bar shows the kill point or later.
                if run.progress >= KILLS[name] or run.proc.poll() is not None:
                    run.proc.send_signal(signal.SIGKILL)
                    del waiting[name]
            time.sleep(0.01)
        for name, run in killed.items():
            assert run.wait() == -signal.SIGKILL, f"{name} was not killed: {run.text[-2000:]}"
            assert not (root / name / "model.h5").exists(), f"{name} finished before the kill"
            history = root / name / "history.csv"
            rows_at_kill[name] = len(training.read_history(history)) if history.exists() else 0
        restarts = {name: _Run(_command(root / name), env, root / f"{name}.restart.log")
                    for name in KILLS}
        started += restarts.values()
        for name, run in [("reference", reference), *restarts.items()]:
            assert run.wait() == 0, f"{name}: {run.text[-3000:]}"
        rerun = {name: [int(e) for e in re.findall(r"Epoch (\d+)/\d+", run.text)]
                 for name, run in restarts.items()}
    finally:
        for run in started:
            if run.proc.poll() is None:
                run.proc.kill()
                run.proc.wait()
    return root, rows_at_kill, rerun


@pytest.mark.slow  # seven `cbcn train` processes, three killed
@pytest.mark.parametrize("name", list(KILLS))
def test_killed_run_restarted_with_the_same_command_ends_as_an_uninterrupted_one(runs, name):
    root, rows_at_kill, rerun = runs
    # Killed inside the epoch it was meant to: the epochs before it were complete, no more.
    kill_epoch = KILLS[name][0]
    assert rows_at_kill[name] == kill_epoch - 1
    # The restart continued from the backup: it ran the killed epoch and those after it only.
    assert rerun[name] == list(range(kill_epoch, EPOCHS + 1))
    reference = training.read_history(root / "reference" / "history.csv")
    assert [row["epoch"] for row in reference] == list(range(EPOCHS))
    assert training.read_history(root / name / "history.csv") == reference
    resumed = training.load_model(root / name).get_weights()
    uninterrupted = training.load_model(root / "reference").get_weights()
    assert len(resumed) == len(uninterrupted)
    for mine, theirs in zip(resumed, uninterrupted):
        np.testing.assert_array_equal(mine, theirs)


def test_the_largest_epoch_count_starts_at_once(tmp_path, tiny_config, monkeypatch):
    """`config.MAX_EPOCHS` epochs of one step: training starts, and is stopped after the first
    epoch (by the history logger, patched to ask Keras to stop)."""
    logged = HistoryLogger.on_epoch_end

    def log_and_stop(self, epoch, logs=None):
        logged(self, epoch, logs)
        self.model.stop_training = True

    monkeypatch.setattr(HistoryLogger, "on_epoch_end", log_and_stop)
    config = tiny_config(f"epochs={config_lib.MAX_EPOCHS}", "steps_per_epoch=1",
                         "precise_bn_batches=0")
    result = training.train(config, tmp_path / "run", verbose=0)
    assert [row["epoch"] for row in result.history] == [0]


def _pipeline_nodes(dataset) -> int:
    graph = tf.compat.v1.GraphDef.FromString(tf.raw_ops.DatasetToGraphV2(
        input_dataset=tf.data.experimental.to_variant(dataset)).numpy())
    return len(graph.node) + sum(len(f.node_def) for f in graph.library.function)


def test_training_pipeline_does_not_grow_with_the_epoch_count(tiny_config):
    config = training.resolve_config(tiny_config())

    def pipeline(stop):
        fn = training.make_input_fn(config, training=True, epochs=(0, stop), steps_per_epoch=1)
        return fn(tf.distribute.InputContext())

    few, many = pipeline(2), pipeline(config_lib.MAX_EPOCHS)
    assert _pipeline_nodes(few) == _pipeline_nodes(many)
    assert int(many.cardinality()) == config_lib.MAX_EPOCHS
    # The first epochs of the long pipeline are those of the short one.
    for (a, la), (b, lb) in zip(few, many.take(2)):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)


@pytest.mark.parametrize("epochs", [config_lib.MAX_EPOCHS + 1, 99999999999999999999999])
def test_epoch_count_past_the_limit_is_refused_before_anything_is_written(
        tmp_path, train_cli, error_line, epochs):
    output = tmp_path / "run"
    assert train_cli(output, f"epochs={epochs}") == 2
    line = error_line()
    assert "'epochs'" in line and str(config_lib.MAX_EPOCHS) in line
    assert not output.exists()


def test_seeded_random_layers_keep_weights_checkpoint_and_config(tmp_path):
    """The per-epoch generators add no weight or checkpoint entry, draw new masks at every
    step, the same masks after a reset to the same epoch, and leave the layer config as it
    was once released."""
    model = training.model_from_kwargs("cbcn_lenet", {"input_shape": [16, 16, 1],
                                                      "orientations": 2,
                                                      "kernel_stage": [2, 2, 2, 2]})
    config, count = model.get_config(), len(model.weights)
    before = tf.train.list_variables(tf.train.Checkpoint(model=model).write(str(tmp_path / "a")))
    randomness = EpochSeededRandomness(model, seed=3, epochs=2)
    assert len(randomness.generators) == 1  # the dropout layer
    after = tf.train.list_variables(tf.train.Checkpoint(model=model).write(str(tmp_path / "b")))
    assert len(model.weights) == count and after == before
    forward = tf.function(lambda images: model(images, training=True))
    images = tf.ones([4, 16, 16, 1])
    randomness.on_epoch_begin(1)
    first, second = forward(images).numpy(), forward(images).numpy()
    randomness.on_epoch_begin(0)
    other_epoch = forward(images).numpy()
    randomness.on_epoch_begin(1)
    again = forward(images).numpy()
    assert not np.array_equal(first, second) and not np.array_equal(first, other_epoch)
    np.testing.assert_array_equal(first, again)
    randomness.release()
    assert model.get_config() == config
