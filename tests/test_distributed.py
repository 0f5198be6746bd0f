"""Multi-worker training: two real worker processes on localhost vs a single-process run.

The two-worker test starts `cbcn train --distribute multi_worker` twice with TF_CONFIG naming
two localhost workers (ports picked by binding port 0), waits with a timeout and kills both
in a `finally`. Both workers share this machine's file system, like workers sharing a network
file system on a cluster.
"""
import collections
import json
import os
import socket
import subprocess
import sys

import cbcn_tf  # noqa: F401  (Keras 2 before tensorflow)
import numpy as np
import pytest
import tensorflow as tf

from cbcn_tf import config as config_lib
from cbcn_tf import training

# The full-precision twin (binary=False: same topology, float convs, BatchNormalization) of a
# tiny CBCN LeNet, without dropout (dropout masks are per replica, one more difference), on
# the packaged digits. Not the binary net: at this size it barely learns in 2 x 20 steps
# (loss 2.31 -> 2.29), and matching two flat curves would prove nothing; the twin's loss
# falls by ~0.3 in the same steps. The distribution code path is the same for both.
SETS = ["model=cbcn_lenet", "model_kwargs.kernel_stage=[2, 2, 2, 2]",
        "model_kwargs.orientations=2", "model_kwargs.dropout=0", "model_kwargs.binary=false",
        "batch_size=32", "steps_per_epoch=20", "epochs=2", "lr=0.02", "tensorboard=false"]
EPOCHS, STEPS = 2, 20
# The runs cannot agree exactly: each worker reads its own half of the data (sharded before
# shuffling), so the global batch at a step holds other examples than the single process'
# batch, and BatchNormalization normalises with per-replica statistics (16 examples per
# worker instead of 32). Measured on this setup (2 epochs x 20 steps, seeds 0, 1, 2):
#   single process  loss e0/e1  2.22/1.88  2.18/1.84  2.11/1.77
#                   val  e0/e1  1.99/1.68  1.97/1.63  1.98/1.50
#   two workers     loss e0/e1  2.15/1.70  2.19/1.80  2.17/1.81
#                   val  e0/e1  1.87/1.45  1.99/1.43  1.87/1.51
#   MirroredStrategy, 2 local replicas (per-replica BN, unsharded data): like single process
#   multi_worker with ONE worker: bitwise the single-process history (same code path)
# So the two-worker curves stay within ~0.25 of the single-process ones, but on all three
# seeds they ended a little lower (val_loss -0.0 to -0.25 after epoch 2); per-replica BN alone
# does not explain it (the mirrored runs do not show it), the cause is not established. The
# test allows |two workers - same-seed single process| <= LOSS_TOL per epoch, and the
# two-worker value within the single-process seed spread widened by SPREAD_MARGIN; the loss
# must also fall by more than LOSS_TOL, so a flat or broken curve cannot pass.
LOSS_TOL = 0.3
SPREAD_MARGIN = 0.2
ITERATIONS_KEY = "model/optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


# --- options ---------------------------------------------------------------------------------


def test_lr_scaling_is_explicit():
    cfg = config_lib.load_config("digits_demo", ["batch_size=128", "lr=0.01",
                                                 "lr_scaling=linear", "base_batch_size=32"])
    assert training.scaled_lr(cfg) == pytest.approx(0.04)
    schedule = training.lr_schedule(cfg)
    assert schedule(0) == pytest.approx(0.04) and schedule(10) == pytest.approx(0.04 * 0.2)
    # "none" (the default) leaves lr alone whatever the global batch.
    assert training.scaled_lr(config_lib.load_config("digits_demo", ["batch_size=512"])) == 0.005


def test_cli_flags_reach_the_config_and_the_strategy(tmp_path, monkeypatch):
    """--batch-size / --lr-scaling / --distribute / --seed end up in the run's config.yaml,
    in the strategy training runs under (two local replicas) and in the learning rate of
    every epoch."""
    from cbcn_tf import cli

    if len(tf.config.list_logical_devices("CPU")) < 2:
        pytest.skip("needs two logical CPU devices configured before TF initialised")
    strategies = []
    make_strategy = training.make_strategy

    def recording_strategy(name):
        strategy = make_strategy(name)
        strategies.append(strategy)
        return strategy

    monkeypatch.setattr(training.loop, "make_strategy", recording_strategy)
    run = tmp_path / "run"
    assert cli.main(["train", "--config", "digits_demo", "--output", str(run), "--verbose", "0",
                     "--set", "model=cbcn_lenet", "--set", "model_kwargs.kernel_stage=[2,2,2,2]",
                     "--set", "model_kwargs.orientations=2", "--set", "epochs=2",
                     "--set", "steps_per_epoch=2", "--set", "base_batch_size=16",
                     "--batch-size", "64", "--lr-scaling", "linear", "--distribute", "mirrored",
                     "--seed", "5", "--deterministic"]) == 0
    saved = config_lib.read_config(run / "config.yaml")
    assert (saved.batch_size, saved.lr_scaling, saved.distribute, saved.seed,
            saved.deterministic) == (64, "linear", "mirrored", 5, True)
    assert len(strategies) == 1 and isinstance(strategies[0], tf.distribute.MirroredStrategy)
    assert strategies[0].num_replicas_in_sync == 2
    history = training.read_history(run / "history.csv")
    np.testing.assert_allclose([row["lr"] for row in history], [0.005 * 64 / 16] * 2)


def test_each_input_pipeline_reads_a_disjoint_shard():
    """What each worker's input_fn yields for one epoch: halves that add up to the split."""
    cfg = training.resolve_config(config_lib.load_config("digits_demo", ["batch_size=32"]))

    def examples(context, training_):
        fn = training.make_input_fn(cfg, training=training_, epochs=(3, 4))
        ds = fn(context)
        batches = [(x.numpy(), y.numpy()) for x, y in ds]
        assert all(len(x) <= 32 // context.num_replicas_in_sync for x, _ in batches)
        return collections.Counter((x.tobytes(), int(y)) for xs, ys in batches
                                   for x, y in zip(xs, ys))

    for training_ in (False, True):  # eval and augmented training pipelines
        full = examples(tf.distribute.InputContext(), training_)
        shards = [examples(tf.distribute.InputContext(2, i, 2), training_) for i in range(2)]
        assert not shards[0] & shards[1], "a worker saw another worker's example"
        assert shards[0] + shards[1] == full, "the shards do not add up to the split"
        assert abs(sum(shards[0].values()) - sum(shards[1].values())) <= 1


@pytest.mark.slow  # `cbcn train` in a child process
def test_multi_worker_without_tf_config_runs_as_one_worker(tmp_path, subprocess_env):
    """No TF_CONFIG: one local worker; it is the chief and writes the run."""
    code = subprocess.run(
        [sys.executable, "-m", "cbcn_tf.cli", "train", "--config", "digits_demo", "--output",
         str(tmp_path / "run"), "--verbose", "0", "--distribute", "multi_worker",
         *[a for s in SETS + ["epochs=1", "steps_per_epoch=3"] for a in ("--set", s)]],
        env=subprocess_env(), capture_output=True, text=True, timeout=240)
    assert code.returncode == 0, code.stderr[-3000:]
    assert os.path.exists(tmp_path / "run" / "model.h5")


# --- two workers -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_worker_run(tmp_path_factory, subprocess_env):
    root = tmp_path_factory.mktemp("multi_worker")
    run = root / "run"
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    args = [sys.executable, "-m", "cbcn_tf.cli", "train", "--config", "digits_demo",
            "--output", str(run), "--verbose", "2", "--distribute", "multi_worker",
            "--seed", "0", *[a for s in SETS for a in ("--set", s)]]
    procs, outputs = [], []
    try:
        for index in range(2):
            tmp = root / f"tmp{index}"
            tmp.mkdir()
            tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker",
                                                                 "index": index}})
            out = open(root / f"out{index}.txt", "w")
            outputs.append(out)
            env = subprocess_env(TF_CONFIG=tf_config, TMPDIR=str(tmp))
            procs.append(subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT))
        codes = [proc.wait(timeout=300) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for out in outputs:
            out.close()
    logs = [(root / f"out{i}.txt").read_text() for i in range(2)]
    assert codes == [0, 0], "\n\n".join(log[-3000:] for log in logs)
    return root, run, logs


@pytest.mark.slow  # two worker processes train (two_worker_run)
def test_two_workers_finish_and_only_the_chief_writes(two_worker_run):
    root, run, logs = two_worker_run
    assert "Input pipeline 0 of 2: batches of 16 per replica" in logs[0]
    assert "Input pipeline 1 of 2: batches of 16 per replica" in logs[1]
    assert "non-chief worker" in logs[1] and "non-chief" not in logs[0]
    # The run folder holds the chief's files and nothing else (no temp or worker files).
    assert sorted(os.listdir(run)) == ["backup", "config.yaml", "curves.png", "history.csv",
                                       "model.h5", "summary.txt"]
    assert os.listdir(run / "backup") == ["chief"]  # Keras removed backup/workertemp_1
    # Each worker's private temp folder (TMPDIR) was deleted.
    assert os.listdir(root / "tmp0") == [] and os.listdir(root / "tmp1") == []
    # The workers stepped together: 2 epochs x 15 steps of the global batch.
    latest = tf.train.latest_checkpoint(str(run / "backup" / "chief"))
    assert tf.train.load_variable(latest, ITERATIONS_KEY) == EPOCHS * STEPS


@pytest.mark.slow  # two worker processes train (two_worker_run)
def test_chief_model_loads_and_evaluates(two_worker_run):
    _, run, _ = two_worker_run
    history = training.read_history(run / "history.csv")
    scores = training.evaluate(run, "digits")
    assert np.isfinite(scores["loss"]) and 0.0 <= scores["top1"] <= scores["top5"] <= 1.0
    # Keras' val_loss (on the sharded test set, drop_remainder) and a fresh evaluation of the
    # saved model on the whole test set agree closely: the saved model is the trained one.
    assert abs(scores["loss"] - history[-1]["val_loss"]) < 0.05


@pytest.mark.slow  # two worker processes, then three single runs
def test_two_workers_match_a_single_process_run(two_worker_run, tmp_path):
    _, run, _ = two_worker_run
    multi = training.read_history(run / "history.csv")
    singles = [training.train(config_lib.load_config("digits_demo", [*SETS, f"seed={seed}"]),
                              str(tmp_path / f"seed{seed}"), verbose=0).history
               for seed in (0, 1, 2)]
    single = singles[0]  # the same seed (same initial weights) as the two-worker run
    assert [row["epoch"] for row in multi] == [row["epoch"] for row in single] == [0, 1]
    diffs = {key: max(abs(m[key] - s[key]) for m, s in zip(multi, single))
             for key in ("loss", "val_loss")}
    print(f"two workers vs one process (seed 0), max |diff| over epochs: {diffs}")
    # The loss must have moved, or matching would prove nothing.
    assert single[0]["loss"] - single[-1]["val_loss"] > LOSS_TOL
    assert multi[0]["loss"] - multi[-1]["val_loss"] > LOSS_TOL
    assert diffs["loss"] <= LOSS_TOL and diffs["val_loss"] <= LOSS_TOL, (multi, single)
    for key in ("loss", "val_loss"):
        for epoch, row in enumerate(multi):
            values = [history[epoch][key] for history in singles]
            assert min(values) - SPREAD_MARGIN <= row[key] <= max(values) + SPREAD_MARGIN, (
                key, epoch, row[key], values)
