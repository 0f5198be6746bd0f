"""The run folder: where each file of a run goes, whether it holds a run to resume, reading
the Keras BackupAndRestore checkpoint in ``backup/``, and rolling back a failed start."""
from __future__ import annotations

import contextlib
import csv
import errno
import os
import shutil
import tempfile
from collections import Counter

import tensorflow as tf

from cbcn_tf import config as config_lib
from cbcn_tf import files
from cbcn_tf.errors import ConfigError, DataError, OutputError

MODEL_FILE = "model.h5"
HISTORY_FILE = "history.csv"
SUMMARY_FILE = "summary.txt"
CURVES_FILE = "curves.png"
BACKUP_DIR = "backup"
TENSORBOARD_DIR = "tensorboard"
# Settings that must match for --resume: they decide the architecture and its weights.
_RESUME_KEYS = ("model", "model_kwargs", "dataset")


class RunDir:
    """A training run's folder (``path``) and the files this process writes.

    ``workdir`` is where this process writes: the folder itself on the chief; on other
    workers of a multi-worker run, a private temporary folder (the Keras multi-worker
    recipe) that `close` deletes. The checkpoint is always ``path/backup``. Files and folders
    this call created are recorded, and `rollback_on_error` removes them if setting up fails.

    Example:
        >>> import tempfile
        >>> from cbcn_tf import config
        >>> run = RunDir(os.path.join(tempfile.mkdtemp(), "run"))
        >>> run.start(config.TrainConfig(), resume=False)  # a new folder: nothing to resume
        False
        >>> os.path.basename(run.file(HISTORY_FILE)), run.saved_epoch()
        ('history.csv', -1)
    """

    def __init__(self, path):
        self.path = os.path.abspath(path)
        self.workdir = self.path
        self.backup_dir = os.path.join(self.path, BACKUP_DIR)
        self.private = False
        self.created = []

    def start(self, config: config_lib.TrainConfig, resume: bool, *, chief: bool = True,
              task: str = "worker0") -> bool:
        """Check the folder (chief) and create it; return whether there is a run to resume.

        Raises ConfigError for a folder this run must not use (see `train`).
        """
        if not chief:  # a private folder deleted at the end
            self.workdir = tempfile.mkdtemp(prefix=f"cbcn-{task}-")
            self.private = True
            return os.path.isdir(self.backup_dir)
        resuming = self._check(config, resume)
        if not os.path.isdir(self.path):
            self._makedirs()
        return resuming

    def file(self, name: str) -> str:
        """Where this process writes the run file ``name``."""
        return os.path.join(self.workdir, name)

    def write(self, name: str, write) -> None:
        """``write(path)`` for the run file ``name``, recording it if it is new."""
        path = self.file(name)
        existed = os.path.exists(path)
        write(path)
        if not existed and not self.private:
            self.created.append(path)

    def saved_config(self):
        """The run's config.yaml as a `TrainConfig`, or None if it has none."""
        path = os.path.join(self.path, config_lib.CONFIG_FILE)
        return config_lib.read_config(path) if os.path.isfile(path) else None

    def history(self) -> list:
        path = self.file(HISTORY_FILE)
        return read_history(path) if os.path.exists(path) else []

    @contextlib.contextmanager
    def rollback_on_error(self):
        """Remove what this run created (files, folders) if the block raises."""
        try:
            yield
        except BaseException:
            for path in reversed(self.created):
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    _remove(path)
            raise

    @contextlib.contextmanager
    def disk_errors(self):
        """Turn a full or read-only disk met by TensorFlow's writers (checkpoints, TensorBoard
        logs) into one `OutputError` naming the run folder; BackupAndRestore keeps the last
        complete epoch, so the same command continues once there is space."""
        try:
            yield
        except tf.errors.OpError as exc:
            text = str(exc.message if hasattr(exc, "message") else exc)
            codes = {errno.ENOSPC: "No space left on device",
                     errno.EROFS: "Read-only file system", errno.EDQUOT: "Disk quota exceeded"}
            code = next((c for c, words in codes.items() if words.lower() in text.lower()), None)
            if code is None:
                raise
            raise OutputError(code, f"Could not write the run in {self.workdir}: "
                              f"{files.os_error_hint(OSError(code, codes[code]))} The last "
                              "completed epoch is kept; rerun the same command to "
                              "continue.") from None

    def close(self) -> None:
        if self.private:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # --- the BackupAndRestore checkpoint -----------------------------------------------------

    def saved_epoch(self) -> int:
        """The last epoch BackupAndRestore saved in ``backup/`` (-1: none)."""
        latest = latest_backup(self.backup_dir)
        if latest is None:
            return -1
        try:
            return int(tf.train.load_variable(latest,
                                              "ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE"))
        except (tf.errors.OpError, ValueError) as exc:
            raise ConfigError(
                f"{self.backup_dir} does not hold a cbcn training backup ({exc}); choose another "
                "output folder.") from None

    def check_backup_matches(self, model) -> None:
        """Refuse a backup saved from another architecture (Keras would fail deep inside fit or,
        worse, restore only the variables that happen to fit)."""
        latest = latest_backup(self.backup_dir)
        theirs = Counter(
            tuple(shape) for name, shape in tf.train.list_variables(latest)
            if name.startswith("model/") and name.endswith("/.ATTRIBUTES/VARIABLE_VALUE")
            and "/optimizer/" not in name and "OPTIMIZER_SLOT" not in name)
        mine = Counter(tuple(v.shape.as_list()) for v in model.weights)
        mismatch = mine != theirs
        if not mismatch:
            try:
                status = tf.train.Checkpoint(model=model).read(latest)
                status.assert_existing_objects_matched()
                status.expect_partial()
            except (AssertionError, ValueError, tf.errors.OpError):
                mismatch = True
        if mismatch:
            raise ConfigError(
                f"{self.backup_dir} holds checkpoints of another model (its variables do not "
                f"match {model.name} with these model_kwargs). Use the settings of that run, or "
                "another output folder.")

    # --- starting ----------------------------------------------------------------------------

    def _check(self, config, resume: bool) -> bool:
        """Return whether there is a run to resume; raise ConfigError for a folder we must
        not use."""
        output_dir = self.path
        if os.path.exists(output_dir) and not os.path.isdir(output_dir):
            raise ConfigError(f"Output {output_dir} is a file; choose a folder.")
        has_backup = (latest_backup(self.backup_dir) is not None
                      if os.path.isdir(self.backup_dir) else False)
        finished = os.path.exists(os.path.join(output_dir, MODEL_FILE))
        has_config = os.path.exists(os.path.join(output_dir, config_lib.CONFIG_FILE))
        if not (has_config or has_backup or finished):
            return False
        saved = self.saved_config()
        # An interrupted run (no model.h5 yet) restarted with the same command continues (from
        # its backup if one was saved, else from the start).
        interrupted_same = saved == config and not finished
        if not resume and not interrupted_same:
            raise ConfigError(
                f"{output_dir} already holds a training run; pass --resume (resume=True) to "
                "continue it, or choose another output folder.")
        if saved is not None:
            for key in _RESUME_KEYS:
                if getattr(saved, key) != getattr(config, key):
                    raise ConfigError(
                        f"Cannot resume {output_dir}: its {key} is {getattr(saved, key)!r} but "
                        f"this run asks for {getattr(config, key)!r} ({', '.join(_RESUME_KEYS)} "
                        "must match the saved config.yaml). Use the same settings or another "
                        "output folder.")
        elif has_backup:
            self.saved_epoch()  # a foreign checkpoint folder fails here; shapes checked later
        return True

    def _makedirs(self) -> None:
        """Create the folder and its missing parents, recording the top-most created one."""
        top = self.path
        while not os.path.exists(os.path.dirname(top)) and os.path.dirname(top) != top:
            top = os.path.dirname(top)
        try:
            os.makedirs(self.path)
        except OSError as exc:
            raise OutputError(exc.errno, f"Could not create the output folder {self.path}: "
                              f"{files.os_error_hint(exc)}") from exc
        self.created.append(top)


def latest_backup(backup_dir):
    """The checkpoint BackupAndRestore would restore (its state file's latest entry), or None.

    Read from the state file like Keras does, without checking that the files exist: a
    damaged or foreign folder must fail here, with a clear message, not inside ``fit``.
    """
    directory = os.path.join(backup_dir, "chief")
    if not os.path.exists(os.path.join(directory, "checkpoint")):
        return None
    try:
        state = tf.train.get_checkpoint_state(directory)
    except Exception:  # a state file that is not a checkpoint state proto  # noqa: BLE001
        state = None
    if state is None or not state.model_checkpoint_path:
        raise ConfigError(
            f"{backup_dir} does not hold a cbcn training backup (unreadable "
            f"{os.path.join(directory, 'checkpoint')}); choose another output folder.")
    path = state.model_checkpoint_path
    return path if os.path.isabs(path) else os.path.join(directory, path)


def read_history(path) -> list:
    """Rows of a history CSV as dicts of floats (``epoch`` as int); `DataError` naming the
    file if it is not one `train` wrote."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = [
                {key: int(value) if key == "epoch" else _float(value)
                 for key, value in row.items()}
                for row in csv.DictReader(handle)
            ]
    except (KeyError, TypeError, ValueError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path} is not a history file written by cbcn train ({exc!r}); "
                        "restore it, or delete it to restart the log from the next "
                        "epoch.") from None
    if rows and any("epoch" not in row or None in row for row in rows):
        raise DataError(f"{path} is not a history file written by cbcn train (no epoch "
                        "column, or ragged rows); restore it, or delete it to restart the log "
                        "from the next epoch.")
    return rows


def _float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")  # Keras writes "NA" for a metric missing in an epoch


def _remove(path) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
