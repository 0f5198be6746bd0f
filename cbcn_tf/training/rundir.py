"""The run folder: where each file of a run goes, whether it holds a run to resume (its
checkpoint is read by `cbcn_tf.training.backup`), and rolling back a failed start.

A run folder has one owner at a time (`LOCK_FILE`), and no path of the run in it is ever
followed through a symbolic link.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import io
import os
import shutil
import stat
import sys
import tempfile

import tensorflow as tf

from cbcn_tf import config as config_lib
from cbcn_tf import files
from cbcn_tf.errors import ConfigError, DataError, OutputError
from cbcn_tf.training import backup
from cbcn_tf.training.backup import latest_backup  # noqa: F401  (part of this module's API)

MODEL_FILE = "model.h5"
HISTORY_FILE = "history.csv"
SUMMARY_FILE = "summary.txt"
CURVES_FILE = "curves.png"
BACKUP_DIR = "backup"
TENSORBOARD_DIR = "tensorboard"
# Held (flock) by the process training into the folder; it holds that process' pid.
LOCK_FILE = ".cbcn.lock"
_RUN_FILES = (config_lib.CONFIG_FILE, MODEL_FILE, HISTORY_FILE, SUMMARY_FILE, CURVES_FILE)
_RUN_DIRS = (BACKUP_DIR, TENSORBOARD_DIR)
# How much longer than the folder's own path the paths train writes get (TensorFlow's
# checkpoint temp files, TensorBoard event files with the host name).
_PATH_ROOM = 160
# Settings that must match for --resume: they decide the architecture and its weights.
_RESUME_KEYS = ("model", "model_kwargs", "dataset")


class RunDir:
    """A training run's folder (``path``) and the files this process writes.

    ``workdir`` is where this process writes: the folder itself on the chief; on other
    workers of a multi-worker run, a private temporary folder (the Keras multi-worker
    recipe) that `close` deletes. The checkpoint is always ``path/backup``. Files and folders
    this call created are recorded, and `rollback_on_error` removes them if setting up fails.
    The chief holds the folder's `LOCK_FILE` from `start` to `close`.

    Example:
        >>> import tempfile
        >>> from cbcn_tf import config
        >>> run = RunDir(os.path.join(tempfile.mkdtemp(), "run"))
        >>> run.start(config.TrainConfig(), resume=False)  # a new folder: nothing to resume
        False
        >>> os.path.basename(run.file(HISTORY_FILE)), run.saved_epoch()
        ('history.csv', -1)
        >>> run.close()  # releases the folder
    """

    def __init__(self, path):
        self.path = os.path.abspath(path)
        self.workdir = self.path
        self.backup_dir = os.path.join(self.path, BACKUP_DIR)
        self.private = False
        self.created = []
        self.lock = None

    def start(self, config: config_lib.TrainConfig, resume: bool, *, chief: bool = True,
              task: str = "worker0") -> bool:
        """Check the folder, create and lock it (chief); return whether there is a run to
        resume.

        Raises ConfigError for a folder this run must not use (see `train`): one another
        process trains into, one holding symlinks or files of a run without its config.yaml,
        ``resume`` without a run to resume, a damaged checkpoint or history.csv. A failure
        here removes what this call created and releases the folder.
        """
        self._check_path()
        if not chief:  # a private folder deleted at the end
            self.workdir = tempfile.mkdtemp(prefix=f"cbcn-{task}-")
            self.private = True
            return os.path.isdir(self.backup_dir)
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise ConfigError(f"Output {self.path} is a file; choose a folder.")
        if resume and not os.path.isdir(self.path):
            raise ConfigError(f"Nothing to resume: {self.path} does not exist. Check the "
                              "path, or start a new run there without --resume.")
        if not os.path.isdir(self.path):
            self._makedirs()
        try:
            self._lock()
            resuming = self._check(config, resume)
            backup.remove_temps(self.backup_dir)  # what a killed run's last save left
        except BaseException:
            self.close()
            self._remove_created()
            raise
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
            self._remove_created()
            raise

    def _remove_created(self) -> None:
        for path in reversed(self.created):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                _remove(path)
        self.created = []

    @contextlib.contextmanager
    def disk_errors(self):
        """Turn a full or read-only disk met by TensorFlow's writers (checkpoints, TensorBoard
        logs) into one `OutputError` naming the run folder; BackupAndRestore keeps the last
        complete epoch, so the same command continues once there is space. Whatever stops
        the block, the temp files of a checkpoint save it interrupted are removed."""
        try:
            yield
        except BaseException as exc:
            if not self.private:
                backup.remove_temps(self.backup_dir)
            if not isinstance(exc, tf.errors.OpError):
                raise
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
        """Release the folder (chief) or delete the private folder (other workers)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        if self.private:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # --- the BackupAndRestore checkpoint -----------------------------------------------------

    def saved_epoch(self, *, full: bool = False) -> int:
        """The last epoch BackupAndRestore saved in ``backup/`` (-1: none); ConfigError if it
        is not a cbcn training backup or (``full``: every tensor read) damaged."""
        return backup.saved_epoch(self.backup_dir, full=full)

    def check_backup_matches(self, model) -> None:
        """Refuse a backup saved from another architecture."""
        backup.check_matches(self.backup_dir, model)

    # --- starting ----------------------------------------------------------------------------

    def _check(self, config, resume: bool) -> bool:
        """Return whether there is a run to resume; raise ConfigError for a folder we must
        not use."""
        output_dir = self.path
        self._check_entries()
        present = [name for name in (*_RUN_FILES, *_RUN_DIRS)
                   if os.path.lexists(os.path.join(output_dir, name))]
        has_backup = self.saved_epoch() >= 0  # a foreign checkpoint folder fails here
        if config_lib.CONFIG_FILE not in present:
            if resume:
                raise ConfigError(
                    f"Nothing to resume in {output_dir}: it holds no config.yaml written by "
                    "cbcn train. Restore the run's config.yaml, or start a new run without "
                    "--resume in a new or empty folder.")
            if present:
                raise ConfigError(
                    f"{output_dir} already holds a training run's files ({', '.join(present)}) "
                    "but no config.yaml written by cbcn train, and this run would overwrite "
                    "them; choose another output folder.")
            return False
        saved = self.saved_config()
        # An interrupted run (no model.h5 yet) restarted with the same command continues (from
        # its backup if one was saved, else from the start).
        interrupted_same = saved == config and MODEL_FILE not in present
        if not resume and not interrupted_same:
            raise ConfigError(
                f"{output_dir} already holds a training run; pass --resume (resume=True) to "
                "continue it, or choose another output folder.")
        for key in _RESUME_KEYS:
            if getattr(saved, key) != getattr(config, key):
                raise ConfigError(
                    f"Cannot resume {output_dir}: its {key} is {getattr(saved, key)!r} but "
                    f"this run asks for {getattr(config, key)!r} ({', '.join(_RESUME_KEYS)} "
                    "must match the saved config.yaml). Use the same settings or another "
                    "output folder.")
        if has_backup:
            self.saved_epoch(full=True)  # shapes are checked once the model is built
        elif resume:
            print(f"cbcn: warning: {self.backup_dir} holds no checkpoint, so --resume trains "
                  f"{output_dir} again from epoch 1.", file=sys.stderr)
        self._check_history()
        return True

    def _check_history(self) -> None:
        """Refuse a history.csv that is malformed, or that lacks rows of saved epochs (cut
        short): new rows would follow a gap. (Each epoch's row is written before its
        checkpoint, so a complete history.csv reaches at least the saved epoch.)"""
        path = self.file(HISTORY_FILE)
        if not os.path.exists(path):
            return
        rows = read_history(path)
        last, saved = (rows[-1]["epoch"] if rows else -1), self.saved_epoch()
        if last < saved:
            ends = f"ends at epoch {last + 1}" if rows else "has no rows"
            raise DataError(
                f"{path} {ends} but {self.backup_dir} holds epoch {saved + 1}: rows are "
                "missing. Restore it, or delete it to restart the log from the next epoch.")

    def _check_entries(self) -> None:
        """Refuse a symlink at any path of the run (it would be written through), or a file
        where the run has a folder and the other way round."""
        for name in (*_RUN_FILES, *_RUN_DIRS):
            path = os.path.join(self.path, name)
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(mode):
                raise _link_error(path)
            folder = name in _RUN_DIRS
            if not (stat.S_ISDIR(mode) if folder else stat.S_ISREG(mode)):
                kind = "folder" if folder else "regular file"
                raise ConfigError(f"{path} is not a {kind}, but cbcn train writes its {name} "
                                  "there; move it away or choose another output folder.")
            for root, dirs, names in os.walk(path) if folder else ():
                for entry in (*dirs, *names):
                    if os.path.islink(os.path.join(root, entry)):
                        raise _link_error(os.path.join(root, entry))

    def _lock(self) -> None:
        """Become the folder's one owner, or raise ConfigError naming the process that is."""
        lock = files.FileLock(os.path.join(self.path, LOCK_FILE))
        try:
            acquired = lock.acquire()
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _link_error(lock.path) from None
            raise OutputError(exc.errno, f"Could not write {lock.path}: "
                              f"{files.os_error_hint(exc)}") from None
        if not acquired:
            pid = lock.holder()
            who = f"process {pid}" if pid else "another process"
            raise ConfigError(
                f"{self.path} is in use: {who} is training into it (it holds {lock.path}). "
                "Wait for it to finish or stop it, or choose another output folder.")
        self.lock = lock

    def _check_path(self) -> None:
        """Refuse a path TensorFlow or the file system cannot take, before creating any of it:
        not UTF-8, a name longer than the file system allows, or no room for the run's files
        under the path length limit."""
        try:
            size = len(self.path.encode("utf-8"))
        except UnicodeEncodeError:
            shown = os.fsencode(self.path).decode("utf-8", "backslashreplace")
            raise ConfigError(
                f"Output folder {shown} is not valid UTF-8, and TensorFlow writes checkpoints "
                "and logs only under UTF-8 paths; choose a UTF-8 name.") from None
        existing = self.path
        while not os.path.isdir(existing):
            existing = os.path.dirname(existing)
        name_max = _pathconf(existing, "PC_NAME_MAX", 255)
        path_max = _pathconf(existing, "PC_PATH_MAX", 4096)
        for name in self.path.split(os.sep):
            if len(name.encode("utf-8")) > name_max:
                raise ConfigError(
                    f"Output folder name {_short(name)} is {len(name.encode('utf-8'))} bytes "
                    f"long, and this file system allows {name_max}; choose a shorter name.")
        if size + _PATH_ROOM > path_max:
            raise ConfigError(
                f"Output folder {_short(self.path)} is {size} bytes long; the files of a run "
                f"need up to {_PATH_ROOM} bytes more and paths are limited to {path_max} bytes "
                "here. Choose a shorter path.")

    def _makedirs(self) -> None:
        """Create the folder and its missing parents, recording the top-most created one; if
        that fails, the parents created on the way are removed again."""
        missing = []
        folder = self.path
        while not os.path.lexists(folder) and os.path.dirname(folder) != folder:
            missing.append(folder)
            folder = os.path.dirname(folder)
        try:
            os.makedirs(self.path)
        except FileExistsError:
            if not os.path.isdir(self.path):
                raise
            return  # another process created it just now: theirs, not ours to remove
        except OSError as exc:
            for folder in missing:  # deepest first; rmdir removes only empty folders
                try:
                    os.rmdir(folder)
                except OSError:
                    pass
            raise OutputError(exc.errno, f"Could not create the output folder {self.path}: "
                              f"{files.os_error_hint(exc)}") from exc
        if missing:
            self.created.append(missing[-1])


def read_history(path) -> list:
    """Rows of a history CSV as dicts of floats (``epoch`` as int); `DataError` naming the
    file if it is not one `train` wrote: not CSV text, no epoch column, rows with missing or
    extra fields, epochs that do not follow each other, or a last row cut short (every row
    `train` writes ends with a line break)."""
    fix = "restore it, or delete it to restart the log from the next epoch."
    with open(path, "rb") as handle:
        data = handle.read()
    if data and not data.endswith(b"\n"):
        raise DataError(f"{path} is cut short (its last row has no line break), so it is not a "
                        f"complete history file written by cbcn train; {fix}")
    try:
        raw = list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))
        if any(None in row or None in row.values() for row in raw):
            raise ValueError("rows with missing or extra fields")
        rows = [{key: int(value) if key == "epoch" else _float(value)
                 for key, value in row.items()} for row in raw]
    except (KeyError, TypeError, ValueError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path} is not a history file written by cbcn train ({exc}); "
                        f"{fix}") from None
    if rows and any("epoch" not in row for row in rows):
        raise DataError(f"{path} is not a history file written by cbcn train (no epoch "
                        f"column); {fix}")
    epochs = [row["epoch"] for row in rows]
    if epochs != list(range(epochs[0], epochs[0] + len(epochs)) if epochs else []):
        raise DataError(f"{path} is not a history file written by cbcn train (its epochs "
                        f"{epochs[:8]} do not follow each other); {fix}")
    return rows


def _float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")  # Keras writes "NA" for a metric missing in an epoch


def _link_error(path) -> ConfigError:
    return ConfigError(
        f"{path} is a symbolic link (to {os.readlink(path)}), and cbcn train never writes "
        "through links in a run folder; remove the link, or choose another output folder.")


def _pathconf(path, name: str, default: int) -> int:
    try:
        return os.pathconf(path, name)
    except (OSError, ValueError, AttributeError):
        return default


def _short(text: str, size: int = 48) -> str:
    return text if len(text) <= size else f"{text[:size]}..."


def _remove(path) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
