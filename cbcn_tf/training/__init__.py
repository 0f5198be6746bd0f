"""Training and evaluation API: ``train(config, output_dir)`` and ``evaluate(model, dataset)``.

Modules: `loop` (train), `resolve` (the one settings step: a config checked as a whole, with
the dataset's model_kwargs and absolute paths), `build` (resolved config -> model), `optim`
(optimiser, schedule, weight decay), `center_loss`, `callbacks`, `inputs` (input pipelines),
`distribute` (strategies), `rundir` (the run folder: files, resume, rollback), `precise_bn`
(BN statistics re-estimated at the final weights before validation and saving;
``precise_bn_batches``) and `evaluation` (scores, model files).

A run writes everything to its output folder::

    config.yaml    resolved config (the recipe after overrides, input_shape / num_classes filled)
    history.csv    one row per epoch (loss, accuracy, top5, lr, val_*), appended on resume
    summary.txt    larq.models.summary + cbcn_tf.summary of the model
    model.h5       final Keras model (reload with `load_model`)
    curves.png     loss / accuracy curves
    backup/        BackupAndRestore checkpoint (weights, optimizer state, epoch) for resuming
    tensorboard/   TensorBoard logs (config key ``tensorboard``)

Resuming (``resume=True``) restores the checkpoint in ``backup/`` and continues at the next
epoch with the optimizer state, e.g. after raising ``epochs``. A run that was killed (no
model.h5 yet) continues the same way when started again with the *same* config, without
``resume``. Each epoch's data and dropout masks are a pure function of (seed, epoch), so
with ``seed`` and ``deterministic`` a resumed run ends bitwise equal to an uninterrupted one.
Every file is written atomically (temp file in the same folder + ``os.replace``); a NaN/Inf
loss raises `TrainingDiverged` with advice. Distributed training (``distribute``: none, mirrored,
multi_worker) is described in docs/DISTRIBUTED.md.

Example (a tiny LeNet on the packaged digits, a few steps per epoch):
    >>> import tempfile
    >>> import cbcn_tf
    >>> from cbcn_tf import config, training
    >>> tiny = ["model=cbcn_lenet", "model_kwargs.kernel_stage=[2, 2, 2, 2]",
    ...         "model_kwargs.orientations=2", "steps_per_epoch=3"]
    >>> cfg = config.load_config("digits_demo", [*tiny, "epochs=1"])
    >>> run = tempfile.mkdtemp()
    >>> result = training.train(cfg, run, verbose=0)
    >>> [row["epoch"] for row in result.history]
    [0]
    >>> cfg = config.load_config("digits_demo", [*tiny, "epochs=2"])
    >>> [row["epoch"] for row in training.train(cfg, run, resume=True, verbose=0).history]
    [0, 1]
    >>> sorted(training.evaluate(run, "digits", rotate=True))
    ['loss', 'top1', 'top5']
"""
from cbcn_tf.training.build import build_model, model_from_kwargs
from cbcn_tf.training.callbacks import CheckStartEpoch, HistoryLogger, NaNGuard, TrainingDiverged
from cbcn_tf.training.center_loss import (CenterLossModel, CenterLossStage, center_deltas,
                                          center_loss)
from cbcn_tf.training.distribute import STRATEGIES, is_chief, make_strategy
from cbcn_tf.training.evaluation import (EVAL_SEED, check_model_fits_data, evaluate,
                                         evaluate_angles, load_model, run_eval_options, save_model,
                                         summary_text, write_summary)
from cbcn_tf.training.inputs import make_input_fn
from cbcn_tf.training.loop import TrainResult, train
from cbcn_tf.training.optim import (WEIGHT_DECAY_SCOPES, add_weight_decay,
                                    compile_for_classification, lr_schedule, make_optimizer,
                                    scaled_lr)
from cbcn_tf.training.precise_bn import (PreciseBatchNorm, precise_batch_norm,
                                         reestimate_batch_norm)
from cbcn_tf.training.resolve import check_model_settings, dataset_model_kwargs, resolve_config
from cbcn_tf.training.rundir import (BACKUP_DIR, CURVES_FILE, HISTORY_FILE, MODEL_FILE,
                                     SUMMARY_FILE, TENSORBOARD_DIR, RunDir, read_history)

__all__ = [
    "BACKUP_DIR", "CURVES_FILE", "CenterLossModel", "CenterLossStage", "CheckStartEpoch",
    "EVAL_SEED", "HISTORY_FILE", "HistoryLogger", "MODEL_FILE", "NaNGuard", "PreciseBatchNorm",
    "RunDir", "STRATEGIES", "SUMMARY_FILE", "TENSORBOARD_DIR", "TrainResult",
    "TrainingDiverged", "WEIGHT_DECAY_SCOPES", "add_weight_decay", "build_model",
    "center_deltas", "center_loss", "check_model_fits_data",
    "check_model_settings", "compile_for_classification",
    "dataset_model_kwargs", "evaluate", "evaluate_angles", "is_chief", "load_model",
    "lr_schedule", "make_input_fn", "make_optimizer", "make_strategy", "model_from_kwargs",
    "precise_batch_norm", "read_history", "reestimate_batch_norm", "resolve_config",
    "run_eval_options", "save_model", "scaled_lr", "summary_text", "train",
    "write_summary",
]
