"""The run folder (`cbcn_tf.training.rundir`): one owner at a time, no symlink followed, an
honest ``--resume``, damaged checkpoints and histories refused, and nothing left behind by a
disk that fills during training (test_rundir_failures.py: inputs, paths and disks that fail
before or after training). Most cases fail before training starts, so they take a second."""
import os
import shutil
import signal
import subprocess
import sys
import time

import cbcn_tf  # noqa: F401  (Keras 2 before tensorflow)
import pytest
import tensorflow as tf

from cbcn_tf import files, training
from cbcn_tf.errors import DataError, OutputError
from cbcn_tf.training import rundir
from tests.conftest import TINY_SETS

LOCK = rundir.LOCK_FILE


def _snapshot(folder):
    """Every path under ``folder`` with its bytes (files) or None (folders, links)."""
    found = {}
    for root, dirs, names in os.walk(folder):
        for name in dirs + names:
            path = os.path.join(root, name)
            is_file = os.path.isfile(path) and not os.path.islink(path)
            found[os.path.relpath(path, folder)] = open(path, "rb").read() if is_file else None
    return found


def _copy_run(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    return run


# --- one owner at a time ---------------------------------------------------------------------

# Holds an exclusive flock on the file argv[1], with its pid in it, until killed.
_HOLDER = ("import fcntl, os, sys, time\n"
           "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
           "fcntl.flock(fd, fcntl.LOCK_EX)\n"
           "os.write(fd, str(os.getpid()).encode())\n"
           "print('locked', flush=True)\n"
           "time.sleep(600)\n")


@pytest.mark.subprocess
def test_folder_locked_by_a_process_is_refused_until_it_is_killed(tmp_path, train_cli,
                                                                  error_line):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(run / LOCK)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert train_cli(run) == 2
        line = error_line()
        assert f"{run} is in use" in line and f"process {holder.pid}" in line
        assert os.listdir(run) == [LOCK]  # nothing written, the owner's lock file kept
        assert train_cli(run, extra=["--resume"]) == 2
        assert f"process {holder.pid}" in error_line()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The system released the killed owner's lock; its file is left, and is no obstacle.
    assert os.listdir(run) == [LOCK]
    assert train_cli(run) == 0
    assert LOCK not in os.listdir(run)
    assert [row["epoch"] for row in training.read_history(run / "history.csv")] == [0]


@pytest.mark.slow  # a 3 x 60-step `cbcn train` process, killed and restarted
def test_second_train_is_refused_and_a_killed_run_restarts(tmp_path, monkeypatch, train_cli,
                                                           error_line, subprocess_env):
    """A `cbcn train` subprocess owns the folder: the same command and a --resume are refused
    while it runs. Killed (SIGKILL) after its first epoch, it leaves its lock file, and the
    same command continues the run to an intact end."""
    run = tmp_path / "run"
    sets = ["epochs=3", "steps_per_epoch=60"]
    command = [sys.executable, "-m", "cbcn_tf.cli", "train", "--config", "digits_demo",
               "--output", str(run), "--verbose", "0", "--seed", "1",
               *[a for s in (*TINY_SETS, *sets) for a in ("--set", s)]]
    log = tmp_path / "first.log"
    with open(log, "w") as handle:
        first = subprocess.Popen(command, env=subprocess_env(), stdout=handle,
                                 stderr=subprocess.STDOUT)
    try:
        assert _wait(first, lambda: (run / LOCK).exists() and (run / LOCK).read_text().strip())
        assert first.poll() is None, log.read_text()[-2000:]
        assert (run / LOCK).read_text().strip() == str(first.pid)
        assert train_cli(run, *sets, extra=["--seed", "1"]) == 2
        assert f"{run} is in use: process {first.pid}" in error_line()
        assert train_cli(run, *sets, extra=["--seed", "1", "--resume"]) == 2
        assert f"process {first.pid}" in error_line()
        # Killed once its first epoch is saved.
        assert _wait(first, lambda: rundir.RunDir(run).saved_epoch() >= 0), \
            log.read_text()[-2000:]
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=60) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert (run / LOCK).exists() and not (run / "model.h5").exists()
    saved = rundir.RunDir(run).saved_epoch()
    trained = []  # the epochs the restart trains
    log_epoch = training.HistoryLogger.on_epoch_end
    monkeypatch.setattr(training.HistoryLogger, "on_epoch_end",
                        lambda self, epoch, logs=None: (trained.append(epoch),
                                                        log_epoch(self, epoch, logs)))
    assert train_cli(run, *sets, extra=["--seed", "1"]) == 0
    assert trained == list(range(saved + 1, 3))
    assert [row["epoch"] for row in training.read_history(run / "history.csv")] == [0, 1, 2]
    assert training.load_model(run).count_params() > 0
    assert rundir.RunDir(run).saved_epoch(full=True) == 2
    assert LOCK not in os.listdir(run)


def _wait(process, condition, timeout=600):
    """Poll ``condition`` until it holds (True) or ``process`` ends or time runs out."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        try:
            if condition():
                return True
        except (OSError, ValueError):  # files being replaced while we look
            pass
        time.sleep(0.05)
    return False


def test_file_lock_is_exclusive_and_removed_on_release(tmp_path):
    path = tmp_path / LOCK
    first, second = files.FileLock(path), files.FileLock(path)
    assert first.acquire()
    assert path.read_text().strip() == str(os.getpid())
    assert not second.acquire() and second.holder() == str(os.getpid())
    first.release()
    assert not path.exists()
    assert second.acquire()
    second.release()


# --- symlinks --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["backup", "model.h5", "history.csv", "config.yaml",
                                  "summary.txt", "curves.png", "tensorboard", LOCK,
                                  "backup/chief"])
def test_symlink_in_the_run_folder_is_refused(name, tmp_path, train_cli, error_line):
    target = tmp_path / "target"
    target.mkdir()
    run = tmp_path / "run"
    (run / name).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, run / name)
    before = _snapshot(run)
    assert train_cli(run, "tensorboard=true") == 2
    assert f"{run / name} is a symbolic link" in error_line()
    assert os.listdir(target) == []  # nothing written through the link
    assert _snapshot(run) == before


def test_output_folder_that_is_a_symlink_is_used(tmp_path, tiny_config):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    run = rundir.RunDir(tmp_path / "link")
    try:
        assert run.start(tiny_config(), resume=False) is False
        assert os.listdir(tmp_path / "real") == [LOCK]
    finally:
        run.close()
    assert os.listdir(tmp_path / "real") == []


def test_file_where_the_run_has_a_folder_is_refused(tmp_path, train_cli, error_line):
    run = tmp_path / "run"
    run.mkdir()
    (run / "backup").write_text("mine")
    assert train_cli(run) == 2
    assert f"{run / 'backup'} is not a folder" in error_line()
    assert (run / "backup").read_text() == "mine"


# --- what --resume resumes -------------------------------------------------------------------


def test_users_own_files_without_config_are_never_overwritten(tmp_path, train_cli, error_line):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.h5").write_bytes(b"my model")
    (run / "summary.txt").write_text("my notes")
    before = _snapshot(run)
    assert train_cli(run) == 2
    assert f"{run} already holds a training run's files (model.h5, summary.txt)" in error_line()
    assert train_cli(run, extra=["--resume"]) == 2
    assert f"Nothing to resume in {run}" in error_line()
    assert _snapshot(run) == before


def test_resume_of_an_empty_or_missing_folder_is_refused(tmp_path, train_cli, error_line):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert train_cli(empty, extra=["--resume"]) == 2
    assert f"Nothing to resume in {empty}" in error_line()
    assert os.listdir(empty) == []
    missing = tmp_path / "missing"
    assert train_cli(missing, extra=["--resume"]) == 2
    assert f"{missing} does not exist" in error_line()
    assert not missing.exists()


def test_folder_holding_another_models_checkpoints_is_refused(tiny_run, tmp_path, train_cli,
                                                               error_line):
    import shutil

    # Checkpoints copied by hand: without a config.yaml naming their model, --resume refuses
    # the folder; with a config.yaml naming another model than they hold, too.
    output = tmp_path / "run"
    shutil.copytree(tiny_run / "backup", output / "backup")
    before = sorted(os.listdir(output / "backup" / "chief"))
    assert train_cli(output, "model=cbcn_resnet18") == 2
    assert f"{output} already holds a training run" in error_line()
    assert train_cli(output, extra=["--resume"]) == 2
    assert f"Nothing to resume in {output}" in error_line()
    saved = (tiny_run / "config.yaml").read_text()
    (output / "config.yaml").write_text(saved.replace("orientations: 2", "orientations: 4"))
    assert train_cli(output, "model_kwargs.orientations=4", extra=["--resume"]) == 2
    assert f"{output / 'backup'} holds checkpoints of another model" in error_line()
    assert sorted(os.listdir(output)) == ["backup", "config.yaml"]  # nothing written
    assert sorted(os.listdir(output / "backup" / "chief")) == before
    # The matching model resumes from them.
    shutil.copy(tiny_run / "config.yaml", output / "config.yaml")
    assert train_cli(output, "epochs=2", extra=["--resume"]) == 0
    assert [row["epoch"] for row in training.read_history(output / "history.csv")] == [1]


def test_folder_holding_something_else_is_refused(tmp_path, train_cli, error_line):
    output = tmp_path / "run"
    (output / "backup" / "chief").mkdir(parents=True)
    (output / "backup" / "chief" / "checkpoint").write_text('model_checkpoint_path: "x"\n')
    assert train_cli(output, extra=["--resume"]) == 2
    assert "does not hold a cbcn training backup" in error_line()
    assert sorted(os.listdir(output)) == ["backup"]


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_checkpoint_is_refused_and_deleting_it_restarts(damage, tiny_run, tmp_path,
                                                                train_cli, error_line, capsys):
    run = _copy_run(tiny_run, tmp_path)
    (data,) = (run / "backup" / "chief").glob("*.data-*")
    content = bytearray(data.read_bytes())
    if damage == "truncate":
        content = content[:len(content) // 2]
    else:
        content[len(content) // 2] ^= 0xFF
    data.write_bytes(bytes(content))
    before = _snapshot(run)
    assert train_cli(run, "epochs=2", extra=["--resume"]) == 2
    line = error_line()
    assert f"{data} is damaged" in line and f"delete it to train {run} again" in line
    assert _snapshot(run) == before
    if damage == "flip":
        return
    # The advised fix: without backup/, --resume says so and trains from epoch 1.
    shutil.rmtree(run / "backup")
    assert train_cli(run, extra=["--resume"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines()
                if line.startswith("cbcn: warning:")]
    assert len(warnings) == 1 and f"{run / 'backup'} holds no checkpoint" in warnings[0]
    assert [row["epoch"] for row in training.read_history(run / "history.csv")] == [0]
    assert rundir.RunDir(run).saved_epoch() == 0


@pytest.mark.parametrize("cut", ["mid-row", "header-only"])
def test_history_cut_short_is_refused(cut, tiny_run, tmp_path, train_cli, error_line):
    run = _copy_run(tiny_run, tmp_path)
    history = run / "history.csv"
    text = history.read_bytes()
    header = text.index(b"\n") + 1
    history.write_bytes(text[:header + 20] if cut == "mid-row" else text[:header])
    before = _snapshot(run)
    assert train_cli(run, "epochs=2", extra=["--resume"]) == 2
    line = error_line()
    assert str(history) in line and "delete it" in line
    assert _snapshot(run) == before
    # Deleting it, as the message says, resumes with a log from the next epoch.
    history.unlink()
    assert train_cli(run, "epochs=2", extra=["--resume"]) == 0
    assert [row["epoch"] for row in training.read_history(history)] == [1]


@pytest.mark.parametrize("content", [
    "loss,accuracy\n0.5,0.9\n",            # no epoch column
    "epoch,loss\nzero,0.5\n",              # epoch not a number
    "epoch,loss\n0,0.5,7,8\n",             # ragged row
    b"\xff\xfe\x00garbage",                # not text
])
def test_malformed_history_on_restart(tiny_run, tmp_path, content, train_cli, error_line):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    history = run / "history.csv"
    history.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = {name: os.path.getmtime(run / name) for name in os.listdir(run)}
    assert train_cli(run, "epochs=2", extra=["--resume"]) == 2
    err = error_line()
    assert str(history) in err and "delete it" in err
    assert {name: os.path.getmtime(run / name) for name in os.listdir(run)} == before


@pytest.mark.parametrize("content, reason", [
    (b"epoch,loss\r\n0,0.5\r\n1,0.4", "cut short"),
    (b"epoch,loss,accuracy\r\n0,0.5\r\n", "missing or extra fields"),
    (b"epoch,loss\r\n0,0.5\r\n2,0.4\r\n", "do not follow each other"),
])
def test_read_history_refuses_incomplete_files(content, reason, tmp_path):
    path = tmp_path / "history.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=reason):
        training.read_history(path)
    path.write_bytes(b"epoch,loss\r\n3,0.5\r\n4,NA\r\n")  # a log restarted at epoch 4
    assert [row["epoch"] for row in training.read_history(path)] == [3, 4]


# --- a full disk -----------------------------------------------------------------------------


def test_full_disk_removes_checkpoint_temp_files(tiny_run, tmp_path):
    """What TensorFlow's checkpoint writer leaves when the disk fills mid-save (the state
    file's temp copy, a data file's temp state, the sharded save's temp folder) is removed;
    the last complete checkpoint stays."""
    run = _copy_run(tiny_run, tmp_path)
    chief = run / "backup" / "chief"
    kept = sorted(os.listdir(chief))
    (chief / "checkpoint.tmp5f0c2a").write_bytes(b"")
    (chief / "ckpt-2.index.tempstate123").write_bytes(b"")
    (chief / "ckpt-2_temp").mkdir()
    (chief / "ckpt-2_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"")
    with pytest.raises(OutputError, match="disk is full"):
        with rundir.RunDir(run).disk_errors():
            raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")
    assert sorted(os.listdir(chief)) == kept
    assert rundir.RunDir(run).saved_epoch(full=True) == 0


def test_real_full_disk_leaves_no_temp_files(small_tmpfs, train_cli, error_line):
    """A 28 KiB tmpfs: config and summary fit, the first checkpoint does not."""
    mount = small_tmpfs
    run = mount / "run"
    assert train_cli(run, "epochs=2") == 2
    assert "No space left on device" in error_line()
    left = [path for path in _snapshot(run)
            if path.endswith("_temp") or ".tmp" in path or ".tempstate" in path]
    assert left == [] and LOCK not in os.listdir(run)


def test_full_disk_during_training(small_tmpfs, train_cli, error_line):
    """A real full disk (a 28 KiB tmpfs: the config and summary fit, the first checkpoint
    does not): TensorFlow's checkpoint writer fails inside fit; one line naming the run
    folder, no model.h5."""
    mount = small_tmpfs
    output = mount / "run"
    code = train_cli(output, "epochs=3", "tensorboard=true")
    err = error_line()
    assert code == 2
    assert "No space left on device (the disk is full)" in err, err
    assert f"Could not write the run in {output}" in err, err
    assert not (output / "model.h5").exists()
    assert not [n for n in os.listdir(output) if ".tmp" in n] if output.exists() else True


def test_resume_refuses_config_yaml_of_another_project(tmp_path, train_cli, error_line):
    """A config.yaml that is not one of cbcn train is refused, not overwritten."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("server: {port: 80}\n")
    assert train_cli(run, extra=["--resume"]) == 2
    assert "config.yaml" in error_line()
    assert (run / "config.yaml").read_text() == "server: {port: 80}\n"
    assert sorted(os.listdir(run)) == ["config.yaml"]
