"""`train`: a config into a run folder, resumable, on one device or distributed."""
from __future__ import annotations

import dataclasses

import tensorflow as tf

from cbcn_tf import config as config_lib
from cbcn_tf import plots
from cbcn_tf.training.build import build_model
from cbcn_tf.training.callbacks import (CheckStartEpoch, EpochSeededRandomness, HistoryLogger,
                                        NaNGuard)
from cbcn_tf.training.center_loss import CenterLossModel, CenterLossStage
from cbcn_tf.training.distribute import is_chief, make_strategy, task
from cbcn_tf.training.evaluation import save_model, write_summary
from cbcn_tf.training.inputs import training_data
from cbcn_tf.training.optim import (add_weight_decay, compile_for_classification,
                                    lr_schedule, make_optimizer, scaled_lr)
from cbcn_tf.training.precise_bn import PreciseBatchNorm
from cbcn_tf.training.resolve import resolve_config
from cbcn_tf.training.rundir import (CURVES_FILE, HISTORY_FILE, MODEL_FILE, SUMMARY_FILE,
                                     TENSORBOARD_DIR, RunDir)


@dataclasses.dataclass
class TrainResult:
    """What `train` returns: the trained classifier (what ``model.h5`` holds), its optimizer
    (``optimizer.iterations`` counts steps across resumes) and the rows of history.csv."""

    model: tf.keras.Model
    optimizer: tf.keras.optimizers.Optimizer
    history: list
    output_dir: str
    is_chief: bool = True  # False on non-chief workers, which wrote nothing into output_dir


def train(config: config_lib.TrainConfig, output_dir: str, *, resume: bool = False,
          verbose: int = 1) -> TrainResult:
    """Train ``config`` into ``output_dir`` (see `cbcn_tf.training` for what is written).

    Everything is checked before anything is written (`resolve_config`: values, dataset,
    model, batch split; then the output folder); a failure while setting up removes what this
    call created. The output folder must be new or empty, or hold a run of the same model:
    with ``resume`` it continues there (more epochs, another lr, ...); without it, it
    continues only an *interrupted* run (backup present, no model.h5) whose saved config
    equals the resolved ``config``, so a killed job restarted with the same command picks up
    where it stopped. Any other folder holding a run is refused (ValueError).

    Distributed (``config.distribute``): the global ``batch_size`` is split across replicas
    and each worker reads its own shard (``strategy.distribute_datasets_from_function`` with
    the data module's ``input_context``: no auto-sharding). Only the chief writes into
    ``output_dir``; other workers write to a temporary folder that is deleted at the end.

    ``verbose`` is Keras' (1: progress bar, 2: one line per epoch, 0: silent).
    """
    # MultiWorkerMirroredStrategy must exist before any TF op runs in this process.
    strategy = make_strategy(config.distribute)
    chief = is_chief(strategy)
    # The one settings step: what follows uses `config` as it is.
    config = resolve_config(config, replicas=strategy.num_replicas_in_sync)

    run = RunDir(output_dir)
    task_type, task_id = task(strategy)
    resuming = run.start(config, resume, chief=chief, task=f"{task_type}{task_id}")
    if verbose:
        role = "" if chief else f" (worker {task_id}, temporary files in {run.workdir})"
        print(f"{'Resuming' if resuming else 'Training'} {config.model} on {config.dataset} "
              f"in {run.path}{role}")
    try:
        with run.rollback_on_error():
            fit = _Fit.prepare(config, strategy, run, verbose)
        with run.disk_errors():
            fit.run(verbose)
            save_model(fit.model, run.file(MODEL_FILE))
        history = run.history()
        if chief:
            plots.plot_curves({config.model: history}, run.file(CURVES_FILE))
    finally:
        run.close()
    return TrainResult(fit.model, fit.fit_model.optimizer, history, run.path, chief)


@dataclasses.dataclass
class _Fit:
    """A compiled model with its data and callbacks, ready for ``fit``."""

    config: config_lib.TrainConfig
    model: tf.keras.Model  # the classifier (saved as model.h5)
    fit_model: tf.keras.Model  # what is fitted: the classifier or its CenterLossModel
    callbacks: list
    train_data: object
    eval_data: object
    steps: dict
    randomness: EpochSeededRandomness

    @classmethod
    def prepare(cls, config, strategy, run: RunDir, verbose) -> "_Fit":
        run.history()  # a damaged history.csv fails before anything is written
        tf.keras.utils.set_random_seed(config.seed)
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        start_epoch = run.saved_epoch() + 1
        total_epochs = config.epochs + config.center_loss_epochs
        with strategy.scope():
            model = build_model(config)
            add_weight_decay(model, config.weight_decay, config.weight_decay_scope)
            fit_model = model
            if config.center_loss_epochs:
                fit_model = CenterLossModel(model, weight=0.0, alpha=config.center_loss_alpha)
                fit_model(tf.zeros([1, *model.input_shape[1:]]))  # build it for BackupAndRestore
            compile_for_classification(fit_model, make_optimizer(config),
                                       jit_compile=config.jit_compile,
                                       steps_per_execution=config.steps_per_execution)
            # Dropout masks as a function of (seed, epoch), like the data: exact resumes.
            randomness = EpochSeededRandomness(model, config.seed, total_epochs)
        if start_epoch > 0:
            run.check_backup_matches(fit_model)
        train_data, eval_data, steps = training_data(config, strategy, start_epoch, verbose)

        # Every worker computes the summary (reading some variables runs collective ops under
        # MultiWorkerMirroredStrategy, which all workers must join); non-chiefs write to their
        # private folder. config.yaml first: it marks the folder as a run of cbcn train, so a
        # run killed right after it continues when restarted.
        run.write(config_lib.CONFIG_FILE, lambda path: config_lib.save_config(config, path))
        run.write(SUMMARY_FILE, lambda path: write_summary(model, path))

        callbacks = [
            # First: its resets come before every other callback's work of that epoch.
            randomness,
            CheckStartEpoch(min(start_epoch, total_epochs)),
            tf.keras.callbacks.LearningRateScheduler(lr_schedule(config)),
            NaNGuard(scaled_lr(config), run.backup_dir),
            # Before BackupAndRestore's epoch-end save and model.h5: both keep these statistics.
            *([PreciseBatchNorm(model, config)]
              if config.precise_bn_batches and config.distribute == "none" else []),
            # Logged before the backup: a kill in between repeats the epoch (the logger trims).
            HistoryLogger(run.file(HISTORY_FILE)),
            # Saves weights + optimizer state + epoch at every epoch end; kept after training so
            # that a later --resume with more epochs continues. Non-chief workers write to
            # backup/workertemp_<id>, which Keras deletes after every save.
            tf.keras.callbacks.BackupAndRestore(run.backup_dir, delete_checkpoint=False),
        ]
        if config.center_loss_epochs:
            callbacks.append(CenterLossStage(config.epochs, config.center_loss_weight))
        if config.tensorboard:
            callbacks.append(tf.keras.callbacks.TensorBoard(
                run.file(TENSORBOARD_DIR), write_graph=False, profile_batch=0))
        return cls(config, model, fit_model, callbacks, train_data, eval_data, steps, randomness)

    def run(self, verbose) -> None:
        config = self.config
        try:
            self.fit_model.fit(self.train_data, epochs=config.epochs + config.center_loss_epochs,
                               steps_per_epoch=self.steps["train"],
                               validation_data=self.eval_data, validation_steps=self.steps["eval"],
                               callbacks=self.callbacks, verbose=verbose)
        finally:
            self.randomness.release()
