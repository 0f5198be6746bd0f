"""The Keras BackupAndRestore checkpoint of a run (``RUN/backup``): which checkpoint it would
restore, whether that is a cbcn training backup and intact, whether it fits a model, and the
temp files an interrupted save leaves."""
from __future__ import annotations

import glob
import os
import shutil
from collections import Counter

import tensorflow as tf

from cbcn_tf.errors import ConfigError

_EPOCH_KEY = "ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE"
_UNREADABLE = (tf.errors.OpError, IndexError, ValueError)  # what TF's checkpoint reader raises


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


def saved_epoch(backup_dir, *, full: bool = False) -> int:
    """The epoch saved in the checkpoint BackupAndRestore would restore (-1: none).

    ConfigError if ``backup_dir`` is not a cbcn training backup, or if a file of that
    checkpoint is damaged. ``full`` reads every saved tensor, which checks their sizes and
    checksums: a truncated or bit-rotted file then fails here, not inside ``fit``.
    """
    latest = latest_backup(backup_dir)
    if latest is None:
        return -1
    if not os.path.isfile(latest + ".index"):
        raise ConfigError(
            f"{backup_dir} does not hold a cbcn training backup (its checkpoint file names "
            f"{latest}, which does not exist); choose another output folder.")
    try:
        reader = tf.train.load_checkpoint(latest)
    except _UNREADABLE as exc:
        raise _damaged(backup_dir, [latest + ".index"], exc) from None
    names = reader.get_variable_to_shape_map()
    if _EPOCH_KEY not in names:
        raise ConfigError(
            f"{backup_dir} does not hold a cbcn training backup ({latest} has no saved epoch); "
            "choose another output folder.")
    try:
        for name in names if full else ():
            reader.get_tensor(name)
        return int(reader.get_tensor(_EPOCH_KEY))
    except _UNREADABLE as exc:
        data = sorted(glob.glob(glob.escape(latest) + ".data-*")) or [latest + ".data-*"]
        raise _damaged(backup_dir, data, exc) from None


def _damaged(backup_dir, paths, exc) -> ConfigError:
    reason = " ".join(str(getattr(exc, "message", exc)).split())
    return ConfigError(
        f"{', '.join(paths)} is damaged ({reason}), so the checkpoint in {backup_dir} cannot "
        f"be restored. Restore {backup_dir} from a copy, or delete it to train "
        f"{os.path.dirname(backup_dir)} again from epoch 1 (with --resume).")


def check_matches(backup_dir, model) -> None:
    """Refuse a backup saved from another architecture (Keras would fail deep inside fit or,
    worse, restore only the variables that happen to fit)."""
    latest = latest_backup(backup_dir)
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
            f"{backup_dir} holds checkpoints of another model (its variables do not match "
            f"{model.name} with these model_kwargs). Use the settings of that run, or another "
            "output folder.")


def remove_temps(backup_dir) -> None:
    """Delete what an interrupted TensorFlow checkpoint save leaves in ``backup_dir/chief``:
    the ``ckpt-N_temp`` folder of the sharded save, ``*.tempstate*`` files and the
    ``checkpoint.tmp*`` state file. Complete checkpoints and their ``checkpoint`` index stay."""
    directory = os.path.join(backup_dir, "chief")
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        path = os.path.join(directory, name)
        if name.endswith("_temp") and os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif ".tempstate" in name or name.startswith("checkpoint.tmp"):
            try:
                os.remove(path)
            except OSError:
                pass
