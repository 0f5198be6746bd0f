"""Keras callbacks of a training run: history.csv, the NaN guard, the start-epoch check, and
the per-epoch seeding of random layers."""
from __future__ import annotations

import hashlib
import os

import numpy as np
import tensorflow as tf

from cbcn_tf import files
from cbcn_tf.errors import TrainingDiverged
from cbcn_tf.training.rundir import latest_backup, read_history


class HistoryLogger(tf.keras.callbacks.Callback):
    """history.csv: one row per completed epoch, the whole file rewritten atomically each time.

    On (re)start it first drops rows of the epochs this fit will (re)run: a run killed after
    writing epoch e's row but before its backup finished repeats epoch e on resume, and
    without the trim history.csv would list e twice. A kill never leaves a half-written row.
    """

    def __init__(self, filename):
        super().__init__()
        self.filename = filename
        self.rows = None

    def on_train_begin(self, logs=None):
        self.rows = None  # read at the first epoch, once the restored epoch is known

    def on_epoch_begin(self, epoch, logs=None):
        if self.rows is None:
            rows = read_history(self.filename) if os.path.exists(self.filename) else []
            self.rows = [row for row in rows if row["epoch"] < epoch]
            if len(self.rows) < len(rows):
                files.write_csv(self.filename, self.rows)

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch}
        row.update({key: float(np.asarray(value)) for key, value in sorted((logs or {}).items())})
        self.rows.append(row)
        files.write_csv(self.filename, self.rows)


class NaNGuard(tf.keras.callbacks.TerminateOnNaN):
    """Keras' TerminateOnNaN that also raises `TrainingDiverged` saying what to try.

    It raises inside the batch, so the epoch is not completed: BackupAndRestore keeps the last
    good epoch's checkpoint and history.csv its rows, and ``--resume`` with a lower ``lr``
    continues from there.
    """

    def __init__(self, lr: float, backup_dir: str | None = None):
        super().__init__()
        self.lr, self.backup_dir, self.epoch = lr, backup_dir, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or np.all(np.isfinite(loss)):
            return
        super().on_batch_end(batch, logs)  # sets model.stop_training, prints Keras' line
        resume = ""
        if self.backup_dir and latest_backup(self.backup_dir) is not None:
            resume = (f" The last completed epoch is kept in {self.backup_dir}: rerun with "
                      "--resume (and the lower lr) to continue from it.")
        raise TrainingDiverged(
            f"Training diverged: the loss became {float(np.asarray(loss))} at epoch "
            f"{self.epoch + 1}, step {batch + 1}. Try a lower learning rate (lr is {self.lr:g}; "
            f"e.g. --set lr={self.lr / 10:g}), and check the data for NaN/Inf values and its "
            f"normalisation (mean/std).{resume}")


class CheckStartEpoch(tf.keras.callbacks.Callback):
    """Fails loudly if Keras resumes at another epoch than the data pipeline was built for."""

    def __init__(self, start_epoch: int):
        super().__init__()
        self.start_epoch, self.checked = start_epoch, False

    def on_epoch_begin(self, epoch, logs=None):
        if not self.checked and epoch != self.start_epoch:
            raise RuntimeError(
                f"BackupAndRestore resumed at epoch {epoch} but the data pipeline starts at "
                f"epoch {self.start_epoch}; the backup folder changed during startup.")
        self.checked = True


class EpochSeededRandomness(tf.keras.callbacks.Callback):
    """Makes what the model's random layers (dropout, noise) draw a pure function of
    (seed, epoch), so that a run resumed at epoch e draws what an uninterrupted one draws.

    Keras' random layers use TF's stateful random ops by default: their stream advances with
    every step and lives in the running process, so a resumed process would draw other masks.
    Here each such layer draws from a ``tf.random.Generator`` (Keras' own "stateful" mode)
    that is reset at each epoch's start to a seed made of (seed, epoch, layer), and before
    each validation (where precise BN runs the model in training mode) to one made of
    (seed, epoch, layer, "validation"). The generators' states are neither weights nor part
    of the checkpoint, so model.h5 and the backup hold exactly what they held before.

    Build it inside the strategy scope and before the model's first training step is traced;
    `release` (after ``fit``) puts the layers back in Keras' default mode, so their saved
    config is unchanged.
    """

    def __init__(self, model: tf.keras.Model, seed: int, epochs: int):
        super().__init__()
        self.seed, self.epochs, self.epoch = seed, epochs, 0
        self.generators, self.released = [], []
        for layer in model.submodules:
            generator = getattr(layer, "_random_generator", None)
            if not isinstance(layer, tf.keras.__internal__.layers.BaseRandomLayer) or \
                    generator is None or generator._rng_type == generator.RNG_STATELESS:
                continue  # stateless layers already draw the same values in every process
            self.released.append((generator, generator._rng_type, generator._seed))
            generator._rng_type, generator._built = generator.RNG_STATEFUL, False
            generator._seed = 0  # replaced at every reset; 0 spares Keras' seed stream
            generator._maybe_init()
            self.generators.append(generator._generator)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self._reset("train")

    def on_test_begin(self, logs=None):
        self._reset("validation")

    def on_train_end(self, logs=None):
        # A fit that ran no epoch (restarted after the last backup) re-estimates precise BN
        # at the end: it draws what the last epoch's validation drew.
        self.epoch = self.epochs - 1
        self._reset("validation")

    def release(self) -> None:
        for generator, rng_type, seed in self.released:
            generator._rng_type, generator._seed = rng_type, seed

    def _reset(self, phase: str) -> None:
        for index, generator in enumerate(self.generators):
            generator.reset_from_seed(_derived_seed(self.seed, self.epoch, index, phase))


def _derived_seed(*parts) -> int:
    """A 63-bit seed from ``parts``, the same in every process (unlike ``hash``)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1
