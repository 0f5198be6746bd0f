"""Training and evaluation API: ``train(config, output_dir)`` and ``evaluate(model, dataset)``.

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
``resume``. Each epoch's data is a pure function of (seed, epoch), so with ``seed`` and
``deterministic`` a resumed run ends bitwise equal to an uninterrupted one. Every file is
written atomically (temp file in the same folder + ``os.replace``); a NaN/Inf loss raises
`TrainingDiverged` with advice. Distributed training (``distribute``: none, mirrored,
multi_worker) is described in docs/DISTRIBUTED.md.

Example:
    >>> import tempfile
    >>> import cbcn_tf
    >>> from cbcn_tf import config, training
    >>> cfg = config.load_config("digits_demo", ["epochs=1", "steps_per_epoch=5"])
    >>> run = tempfile.mkdtemp()
    >>> result = training.train(cfg, run, verbose=0)
    >>> [row["epoch"] for row in result.history]
    [0]
    >>> cfg = config.load_config("digits_demo", ["epochs=2", "steps_per_epoch=5"])
    >>> [row["epoch"] for row in training.train(cfg, run, resume=True, verbose=0).history]
    [0, 1]
    >>> sorted(training.evaluate(run, "digits", rotate=True))
    ['loss', 'top1', 'top5']
"""
from __future__ import annotations

import csv
import dataclasses
import math
import os
import shutil
import tempfile
import warnings

import larq as lq
import numpy as np
import tensorflow as tf

from cbcn_tf import config as config_lib
from cbcn_tf import data as data_lib
from cbcn_tf import files, plots
from cbcn_tf.summary import iter_layers, summary as cbcn_summary

STRATEGIES = ("none", "mirrored", "multi_worker")
MODEL_FILE = "model.h5"
HISTORY_FILE = "history.csv"
SUMMARY_FILE = "summary.txt"
CURVES_FILE = "curves.png"
BACKUP_DIR = "backup"
TENSORBOARD_DIR = "tensorboard"
# Evaluation data always uses this seed, so every run is scored on the same rotated test set.
EVAL_SEED = 0
# Settings that must match for --resume: they decide the architecture and its weights.
_RESUME_KEYS = ("model", "model_kwargs", "dataset")
# Smallest input height / width of the zoo models: the product of their strides, so every
# stride-2 conv / pool still halves a map of at least 2x2 (smaller inputs build, since all
# padding is "same", but the last stages then run on 1x1 maps padded with constants).
MIN_INPUT_SIZE = {
    "cbcn_resnet18": 8, "xnor_resnet18": 8, "xnor_resnet18_doubled": 8,
    "cbcn_resnet18_imagenet": 32, "cbcn_lenet": 8, "xnor_lenet": 8, "cbcn_wrn22": 4,
    "cbcn_wrn40": 4,
}


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite; the message says what to try."""


@dataclasses.dataclass
class TrainResult:
    """What `train` returns: the trained classifier (what ``model.h5`` holds), its optimizer
    (``optimizer.iterations`` counts steps across resumes) and the rows of history.csv."""

    model: tf.keras.Model
    optimizer: tf.keras.optimizers.Optimizer
    history: list
    output_dir: str
    is_chief: bool = True  # False on non-chief workers, which wrote nothing into output_dir


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The distribution strategy for ``--distribute NAME``.

    "none": the default strategy; "mirrored": ``MirroredStrategy`` over all local devices;
    "multi_worker": ``MultiWorkerMirroredStrategy`` with the cluster and this process' task
    from the ``TF_CONFIG`` environment variable (see docs/DISTRIBUTED.md). TensorFlow needs
    the multi-worker strategy created before any other TF op runs in the process, which is why
    `train` creates it first.

    Example:
        >>> make_strategy("none").num_replicas_in_sync
        1
    """
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"Unknown distribution strategy {name!r}; use one of {', '.join(STRATEGIES)}.")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run (checkpoints, history, summaries, model.h5).

    True without distribution and for MirroredStrategy; under MultiWorkerMirroredStrategy
    only for the "chief" task (or worker 0 when TF_CONFIG has no chief).
    """
    return bool(strategy.extended.should_checkpoint)


def _task(strategy) -> tuple:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return None, 0
    return resolver.task_type, resolver.task_id or 0


def scaled_lr(config: config_lib.TrainConfig) -> float:
    """``lr`` after the ``lr_scaling`` rule: ``lr * batch_size / base_batch_size`` if "linear".

    Example:
        >>> cfg = config_lib.TrainConfig(lr=0.1, batch_size=1024, lr_scaling="linear",
        ...                              base_batch_size=256)
        >>> round(scaled_lr(cfg), 6)
        0.4
    """
    if config.lr_scaling == "linear":
        return config.lr * config.batch_size / config.base_batch_size
    return config.lr


def lr_schedule(config: config_lib.TrainConfig):
    """Piecewise-constant learning rate over epochs: ``lr * lr_gamma ** #(milestones <= epoch)``.

    The rate depends on the epoch only (Keras passes the current rate as a second argument,
    which is ignored), so a resumed run gets the same rates as an uninterrupted one.

    ``lr`` is first scaled by `scaled_lr` (``lr_scaling``).

    Example:
        >>> schedule = lr_schedule(config_lib.load_config("cifar10_resnet18_k4"))
        >>> [round(schedule(epoch), 6) for epoch in (0, 59, 60, 120, 160)]
        [0.1, 0.1, 0.02, 0.004, 0.0008]
    """
    milestones = sorted(config.lr_milestones)
    base = scaled_lr(config)

    def schedule(epoch: int, current_lr=None) -> float:
        rate = base * config.lr_gamma ** sum(epoch >= m for m in milestones)
        if epoch < config.lr_warmup_epochs:  # linear warm-up (config key lr_warmup_epochs)
            rate *= (epoch + 1) / (config.lr_warmup_epochs + 1)
        return rate

    return schedule


def resolve_config(config: config_lib.TrainConfig) -> config_lib.TrainConfig:
    """Fill ``model_kwargs`` input_shape / num_classes from the dataset unless given."""
    info = data_lib.dataset_info(config.dataset, data_dir=config.data_dir)
    kwargs = {"input_shape": list(info.input_shape), "num_classes": info.num_classes}
    kwargs.update(config.model_kwargs)
    return dataclasses.replace(config, model_kwargs=kwargs)


def check_model_settings(config: config_lib.TrainConfig) -> None:
    """Refuse, before building anything, an unknown model or an input below its minimum size.

    Example:
        >>> cfg = config_lib.TrainConfig(model="cbcn_resnet18_imagenet",
        ...                              model_kwargs={"input_shape": [16, 16, 3]})
        >>> check_model_settings(cfg)
        Traceback (most recent call last):
        ...
        ValueError: Input shape (16, 16, 3) is too small for cbcn_resnet18_imagenet: its strides downsample by 32, so it needs at least 32x32 inputs. Use a dataset with larger images or set model_kwargs.input_shape to at least [32, 32, C].
    """
    from cbcn_tf.models import list_models

    if config.model not in list_models():
        raise ValueError(
            f"Unknown model {config.model!r}. Valid names: {', '.join(list_models())}.")
    shape = config.model_kwargs.get("input_shape")
    minimum = MIN_INPUT_SIZE.get(config.model)
    if shape is None or minimum is None:
        return
    if len(shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {tuple(shape)}.")
    if min(shape[:2]) < minimum:
        raise ValueError(
            f"Input shape {tuple(shape)} is too small for {config.model}: its strides downsample "
            f"by {minimum}, so it needs at least {minimum}x{minimum} inputs. Use a dataset with "
            f"larger images or set model_kwargs.input_shape to at least [{minimum}, {minimum}, C].")


def build_model(config: config_lib.TrainConfig) -> tf.keras.Model:
    """``cbcn_tf.models.create_model(config.model, **config.model_kwargs)`` (lists as tuples)."""
    from cbcn_tf.models import create_model

    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in config.model_kwargs.items()}
    try:
        return create_model(config.model, **kwargs)
    except TypeError as exc:  # an unknown keyword from the recipe or --set model_kwargs.NAME
        raise ValueError(f"Model keyword arguments do not fit {config.model}: {exc}.") from None


def add_weight_decay(model: tf.keras.Model, weight_decay: float, scope: str = "all") -> None:
    """Add the coupled L2 loss ``weight_decay / 2 * sum ||v||^2`` to ``model.losses``.

    Its gradient ``weight_decay * v`` is what PyTorch's SGD ``weight_decay`` adds, so the
    released code's recipes carry over. ``scope`` is "all" (every trainable variable, the
    released code), "kernels" (conv / dense kernels incl. latent binary weights) or
    "float_kernels" (kernels of layers without a kernel quantizer).

    Example:
        >>> model = tf.keras.Sequential([tf.keras.layers.Dense(2, input_shape=(3,))])
        >>> add_weight_decay(model, 5e-4, "kernels")
        >>> len(model.losses)
        1
    """
    if weight_decay == 0:
        return
    if scope == "all":
        variables = list(model.trainable_variables)
    elif scope in ("kernels", "float_kernels"):
        variables = [
            layer.kernel for layer in iter_layers(model)
            if getattr(layer, "kernel", None) is not None and layer.kernel.trainable
            and (scope == "kernels" or getattr(layer, "kernel_quantizer", None) is None)
        ]
    else:
        raise ValueError(
            f"Unknown weight_decay_scope {scope!r}; use all, kernels or float_kernels.")
    # Decay the latent float weights of larq's quantized variables, never their sign.
    variables = [getattr(v, "latent_variable", v) for v in variables]
    model.add_loss(lambda: weight_decay * tf.add_n([tf.nn.l2_loss(v) for v in variables]))


def make_optimizer(config: config_lib.TrainConfig) -> tf.keras.optimizers.Optimizer:
    if config.optimizer == "sgd":
        return tf.keras.optimizers.SGD(config.lr, momentum=config.momentum,
                                       nesterov=config.nesterov)
    return tf.keras.optimizers.Adam(config.lr)


def compile_for_classification(model: tf.keras.Model, optimizer=None, *,
                               jit_compile: bool = False, steps_per_execution: int = 1) -> None:
    """Compile with cross-entropy, top-1 ("accuracy") and top-5 ("top5") metrics.

    ``jit_compile`` and ``steps_per_execution`` are Keras' (config keys of the same names).
    """
    classifier = model.classifier if isinstance(model, CenterLossModel) else model
    num_classes = classifier.output_shape[-1]
    from_logits = not _ends_in_softmax(classifier)
    model.compile(
        optimizer=optimizer or "sgd",
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
        metrics=[
            tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            tf.keras.metrics.SparseTopKCategoricalAccuracy(k=min(5, num_classes), name="top5"),
        ],
        jit_compile=jit_compile, steps_per_execution=steps_per_execution,
    )


# --- center loss (SPEC 5) --------------------------------------------------------------------


def center_loss(features, labels, centers):
    """``sum_i ||f_i - c_{y_i}||^2 / (2B)`` over a batch of B features.

    Example:
        >>> center_loss(tf.constant([[1.0, 0.0], [0.0, 2.0]]), tf.constant([0, 1]),
        ...             tf.zeros((2, 2))).numpy()
        1.25
    """
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    diff = features - tf.gather(centers, labels)
    batch = tf.cast(tf.shape(features)[0], features.dtype)
    return tf.reduce_sum(tf.square(diff)) / (2.0 * batch)


def center_deltas(features, labels, centers):
    """Centre steps of Wen et al. (2016): ``sum_{i: y_i = j} (c_j - f_i) / (1 + n_j)``.

    A centre moves by ``alpha * delta`` per batch; classes absent from the batch stay put.
    """
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    num_classes = tf.shape(centers)[0]
    sums = tf.math.unsorted_segment_sum(tf.gather(centers, labels) - features, labels, num_classes)
    counts = tf.math.unsorted_segment_sum(tf.ones_like(labels, features.dtype), labels, num_classes)
    return sums / (1.0 + counts)[:, None]


class CenterLossModel(tf.keras.Model):
    """Trains ``model`` with ``loss + weight * center_loss`` on the input of its final Dense.

    The centres (one per class) are not trained by the optimizer; after every step they move
    towards the batch features by ``alpha * center_deltas``. ``center_loss_weight`` is a
    variable, so a callback can switch the term on for a fine-tuning stage while the centres
    are tracked from the start. The metric "center_loss" reports the (unweighted) term; "loss"
    stays the classification loss. ``model`` itself is trained in place: save it, not this.

    Example:
        >>> inputs = tf.keras.Input((4,))
        >>> features = tf.keras.layers.Dense(3, activation="relu")(inputs)
        >>> base = tf.keras.Model(inputs, tf.keras.layers.Dense(2, activation="softmax")(features))
        >>> wrapper = CenterLossModel(base, weight=0.1)
        >>> compile_for_classification(wrapper)
        >>> history = wrapper.fit(tf.zeros((8, 4)), tf.zeros((8,), tf.int64), verbose=0)
        >>> "center_loss" in history.history
        True
    """

    def __init__(self, model: tf.keras.Model, *, weight: float = 0.01, alpha: float = 0.5,
                 **kwargs):
        super().__init__(**kwargs)
        dense = _final_dense(model)
        self.classifier = model
        self.alpha = float(alpha)
        self._with_features = tf.keras.Model(model.inputs, [model.outputs[0], dense.input])
        # MEAN: under MirroredStrategy every replica's centre step is averaged.
        self.centers = self.add_weight(
            name="centers", shape=(dense.units, dense.input.shape[-1]), initializer="zeros",
            trainable=False, aggregation=tf.VariableAggregation.MEAN)
        self.center_loss_weight = self.add_weight(
            name="center_loss_weight", shape=(), trainable=False,
            initializer=tf.keras.initializers.Constant(weight))
        self.center_loss_tracker = tf.keras.metrics.Mean(name="center_loss")

    def call(self, inputs, training=None):
        return self.classifier(inputs, training=training)

    def train_step(self, data):
        x, y, sample_weight = tf.keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred, features = self._with_features(x, training=True)
            loss = self.compute_loss(x, y, y_pred, sample_weight)
            term = center_loss(features, y, self.centers)
            # compute_loss is already divided by the replica count; the extra term must be too.
            replicas = self.distribute_strategy.num_replicas_in_sync
            total = loss + self.center_loss_weight * term / replicas
        self.optimizer.minimize(total, self.trainable_variables, tape=tape)
        self.centers.assign_sub(self.alpha * center_deltas(features, y, self.centers))
        self.center_loss_tracker.update_state(term)
        return self.compute_metrics(x, y, y_pred, sample_weight)

    def test_step(self, data):
        x, y, sample_weight = tf.keras.utils.unpack_x_y_sample_weight(data)
        y_pred, features = self._with_features(x, training=False)
        self.compute_loss(x, y, y_pred, sample_weight)
        self.center_loss_tracker.update_state(center_loss(features, y, self.centers))
        return self.compute_metrics(x, y, y_pred, sample_weight)


class _CenterLossStage(tf.keras.callbacks.Callback):
    """Switches the center loss on from ``start_epoch`` (the fine-tuning stage)."""

    def __init__(self, start_epoch: int, weight: float):
        super().__init__()
        self.start_epoch, self.weight = start_epoch, weight

    def on_epoch_begin(self, epoch, logs=None):
        self.model.center_loss_weight.assign(self.weight if epoch >= self.start_epoch else 0.0)


class _HistoryLogger(tf.keras.callbacks.Callback):
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
        if self.backup_dir and _latest_backup(self.backup_dir) is not None:
            resume = (f" The last completed epoch is kept in {self.backup_dir}: rerun with "
                      "--resume (and the lower lr) to continue from it.")
        raise TrainingDiverged(
            f"Training diverged: the loss became {float(np.asarray(loss))} at epoch "
            f"{self.epoch + 1}, step {batch + 1}. Try a lower learning rate (lr is {self.lr:g}; "
            f"e.g. --set lr={self.lr / 10:g}), and check the data for NaN/Inf values and its "
            f"normalisation (mean/std).{resume}")


class _CheckStartEpoch(tf.keras.callbacks.Callback):
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


# --- runs ------------------------------------------------------------------------------------


def train(config: config_lib.TrainConfig, output_dir: str, *, resume: bool = False,
          verbose: int = 1) -> TrainResult:
    """Train ``config`` into ``output_dir`` (see the module docstring for what is written).

    Everything is checked before anything is written (config values, model name, input size,
    dataset, output folder); a failure while setting up removes what this call created. The
    output folder must be new or empty, or hold a run of the same model: with ``resume`` it
    continues there (more epochs, another lr, ...); without it, it continues only an
    *interrupted* run (backup present, no model.h5) whose saved config equals ``config``, so a
    killed job restarted with the same command picks up where it stopped. Any other folder
    holding a run is refused (ValueError).

    Distributed (``config.distribute``): the global ``batch_size`` is split across replicas
    and each worker reads its own shard (``strategy.distribute_datasets_from_function`` with
    the data module's ``input_context``: no auto-sharding). Only the chief writes into
    ``output_dir``; other workers write to a temporary folder that is deleted at the end.

    ``verbose`` is Keras' (1: progress bar, 2: one line per epoch, 0: silent).
    """
    # MultiWorkerMirroredStrategy must exist before any TF op runs in this process.
    strategy = make_strategy(config.distribute)
    chief = is_chief(strategy)
    config_lib.check_values(config)
    config = resolve_config(config)  # unknown dataset / unreadable folders fail here
    check_model_settings(config)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ValueError(
            f"batch_size {config.batch_size} is the global batch and must divide evenly across "
            f"the {replicas} replicas; use a multiple of {replicas}.")

    output_dir = os.path.abspath(output_dir)
    created = []  # what this call created, removed again if setup fails
    if chief:
        resuming = _check_output_dir(output_dir, config, resume)
        if not os.path.isdir(output_dir):
            _makedirs(output_dir, created)
        workdir = output_dir
    else:  # non-chief: the Keras multi-worker recipe, a private folder deleted at the end
        resuming = os.path.isdir(os.path.join(output_dir, BACKUP_DIR))
        task_type, task_id = _task(strategy)
        workdir = tempfile.mkdtemp(prefix=f"cbcn-{task_type}{task_id}-")
    if verbose:
        role = "" if chief else f" (worker {_task(strategy)[1]}, temporary files in {workdir})"
        print(f"{'Resuming' if resuming else 'Training'} {config.model} on {config.dataset} "
              f"in {output_dir}{role}")
    try:
        try:
            fit = _setup(config, strategy, output_dir, workdir, chief, verbose, created)
        except BaseException:
            for path in reversed(created):
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    _remove(path)
            raise
        fit_model, model, callbacks, train_data, eval_data, steps = fit
        fit_model.fit(train_data, epochs=config.epochs + config.center_loss_epochs,
                      steps_per_epoch=steps["train"], validation_data=eval_data,
                      validation_steps=steps["eval"], callbacks=callbacks, verbose=verbose)

        save_model(model, os.path.join(workdir, MODEL_FILE))
        history_path = os.path.join(workdir, HISTORY_FILE)
        history = read_history(history_path) if os.path.exists(history_path) else []
        if chief:
            curves = os.path.join(output_dir, CURVES_FILE)
            plots.plot_curves({config.model: history}, curves)
    finally:
        if not chief:
            shutil.rmtree(workdir, ignore_errors=True)
    return TrainResult(model, fit_model.optimizer, history, output_dir, chief)


def _setup(config, strategy, output_dir, workdir, chief, verbose, created):
    tf.keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    backup_dir = os.path.join(output_dir, BACKUP_DIR)
    start_epoch = _saved_epoch(backup_dir) + 1
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
    if start_epoch > 0:
        _check_backup_matches(fit_model, backup_dir)
    train_data, eval_data, steps = _training_data(config, strategy, start_epoch, verbose)

    total_epochs = config.epochs + config.center_loss_epochs
    # Every worker computes the summary (reading some variables runs collective ops under
    # MultiWorkerMirroredStrategy, which all workers must join); non-chiefs write to workdir.
    for name, write in ((SUMMARY_FILE, lambda path: write_summary(model, path)),
                        (config_lib.CONFIG_FILE,
                         lambda path: config_lib.save_config(config, path))):
        path = os.path.join(workdir, name)
        existed = os.path.exists(path)
        write(path)
        if not existed and chief:
            created.append(path)

    callbacks = [
        _CheckStartEpoch(min(start_epoch, total_epochs)),
        tf.keras.callbacks.LearningRateScheduler(lr_schedule(config)),
        NaNGuard(scaled_lr(config), backup_dir),
        # Logged before the backup: a kill in between repeats the epoch (the logger trims).
        _HistoryLogger(os.path.join(workdir, HISTORY_FILE)),
        # Saves weights + optimizer state + epoch at every epoch end; kept after training so
        # that a later --resume with more epochs continues. Non-chief workers write to
        # backup/workertemp_<id>, which Keras deletes after every save.
        tf.keras.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=False),
    ]
    if config.center_loss_epochs:
        callbacks.append(_CenterLossStage(config.epochs, config.center_loss_weight))
    if config.tensorboard:
        callbacks.append(tf.keras.callbacks.TensorBoard(
            os.path.join(workdir, TENSORBOARD_DIR), write_graph=False, profile_batch=0))
    return fit_model, model, callbacks, train_data, eval_data, steps


def evaluate(model, dataset: str, *, split: str = "test", rotate: bool = False,
             batch_size: int = 128, data_dir: str | None = None,
             validation_fraction: float | None = None, verbose: int = 0) -> dict:
    """Top-1 / top-5 accuracy and cross-entropy of ``model`` on one split.

    ``model`` is a Keras model, a ``.h5`` file or a run folder. ``rotate=True`` scores the
    rotated variant (MNIST-rot / CIFAR10-rot angles, fixed seed). The loss is the plain
    cross-entropy (no weight decay term).

    Example:
        >>> from cbcn_tf.models import create_model
        >>> model = create_model("cbcn_lenet", input_shape=(16, 16, 1), orientations=2)
        >>> scores = evaluate(model, "digits", rotate=True)
        >>> 0.0 <= scores["top1"] <= scores["top5"] <= 1.0
        True
    """
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    data = data_lib.load_dataset(dataset, split, batch_size=batch_size, data_dir=data_dir,
                                 rotate=rotate, seed=EVAL_SEED,
                                 validation_fraction=validation_fraction)
    # A fresh functional model over the same layers: compiling it leaves ``model``'s
    # optimizer and losses untouched.
    scorer = tf.keras.Model(model.inputs, model.outputs)
    compile_for_classification(scorer)
    values = scorer.evaluate(data, verbose=verbose, return_dict=True)
    return {"top1": values["accuracy"], "top5": values["top5"], "loss": values["loss"]}


def load_model(path) -> tf.keras.Model:
    """Load a model saved by `train` (``model.h5``, or the run folder holding it).

    Example:
        >>> from cbcn_tf.models import create_model
        >>> model = create_model("cbcn_lenet", input_shape=(16, 16, 1), orientations=2)
        >>> save_model(model, "/tmp/cbcn_lenet.h5")
        >>> load_model("/tmp/cbcn_lenet.h5").count_params() == model.count_params()
        True
    """
    import cbcn_tf.models  # noqa: F401  (registers the zoo's custom objects)

    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, MODEL_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"No saved model at {path}; pass a run folder written by `cbcn train` (with "
            f"{MODEL_FILE}) or a .h5 file.")
    return tf.keras.models.load_model(path, compile=False)


def save_model(model: tf.keras.Model, path) -> None:
    """Save ``model`` as Keras HDF5 without optimizer, atomically (temp file + os.replace)."""

    def write(tmp):
        with warnings.catch_warnings():  # HDF5 is chosen on purpose: it reloads CBConv2D exactly
            warnings.filterwarnings("ignore", "You are saving your model as an HDF5 file")
            model.save(tmp, save_format="h5", include_optimizer=False)

    files.atomic_write(path, write)


def summary_text(model: tf.keras.Model) -> str:
    """``larq.models.summary`` (with Larq's memory estimate) followed by ``cbcn_tf.summary``."""
    lines = []
    lq.models.summary(model, print_fn=lines.append)
    cbcn_summary(model, print_fn=lines.append)
    return "\n".join(lines) + "\n"


def write_summary(model: tf.keras.Model, path) -> str:
    text = summary_text(model)
    files.write_text(path, text)
    return text


def read_history(path) -> list:
    """Rows of a history CSV as dicts of floats (``epoch`` as int)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return [
            {key: int(value) if key == "epoch" else _float(value) for key, value in row.items()}
            for row in csv.DictReader(handle)
        ]


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


def _makedirs(path, created) -> None:
    """Create ``path`` and its missing parents, recording the top-most created folder."""
    top = path
    while not os.path.exists(os.path.dirname(top)) and os.path.dirname(top) != top:
        top = os.path.dirname(top)
    try:
        os.makedirs(path)
    except OSError as exc:
        raise OSError(exc.errno, f"Could not create the output folder {path}: "
                      f"{files.os_error_hint(exc)}") from exc
    created.append(top)


def _latest_backup(backup_dir):
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
        raise ValueError(
            f"{backup_dir} does not hold a cbcn training backup (unreadable "
            f"{os.path.join(directory, 'checkpoint')}); choose another output folder.")
    path = state.model_checkpoint_path
    return path if os.path.isabs(path) else os.path.join(directory, path)


def _saved_epoch(backup_dir) -> int:
    """The last epoch BackupAndRestore saved in ``backup_dir`` (-1: none)."""
    latest = _latest_backup(backup_dir)
    if latest is None:
        return -1
    try:
        return int(tf.train.load_variable(latest, "ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE"))
    except (tf.errors.OpError, ValueError) as exc:
        raise ValueError(
            f"{backup_dir} does not hold a cbcn training backup ({exc}); choose another output "
            "folder.") from None


def _check_backup_matches(model, backup_dir) -> None:
    """Refuse a backup saved from another architecture (Keras would fail deep inside fit or,
    worse, restore only the variables that happen to fit)."""
    from collections import Counter

    latest = _latest_backup(backup_dir)
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
        raise ValueError(
            f"{backup_dir} holds checkpoints of another model (its variables do not match "
            f"{model.name} with these model_kwargs). Use the settings of that run, or another "
            "output folder.")


def _check_output_dir(output_dir: str, config, resume: bool) -> bool:
    """Return whether there is a run to resume; raise ValueError for a folder we must not use."""
    config_path = os.path.join(output_dir, config_lib.CONFIG_FILE)
    backup = os.path.join(output_dir, BACKUP_DIR)
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(f"Output {output_dir} is a file; choose a folder.")
    has_backup = _latest_backup(backup) is not None if os.path.isdir(backup) else False
    has_run = (os.path.exists(config_path) or has_backup
               or os.path.exists(os.path.join(output_dir, MODEL_FILE)))
    if not has_run:
        return False
    saved = config_lib.read_config(config_path) if os.path.exists(config_path) else None
    finished = os.path.exists(os.path.join(output_dir, MODEL_FILE))
    # An interrupted run (no model.h5 yet) restarted with the same command continues (from
    # its backup if one was saved, else from the start).
    interrupted_same = saved == config and not finished
    if not resume and not interrupted_same:
        raise ValueError(
            f"{output_dir} already holds a training run; pass --resume (resume=True) to continue "
            "it, or choose another output folder.")
    if saved is not None:
        for key in _RESUME_KEYS:
            if getattr(saved, key) != getattr(config, key):
                raise ValueError(
                    f"Cannot resume {output_dir}: its {key} is {getattr(saved, key)!r} but this "
                    f"run asks for {getattr(config, key)!r} ({', '.join(_RESUME_KEYS)} must match "
                    "the saved config.yaml). Use the same settings or another output folder.")
    elif has_backup:
        _saved_epoch(backup)  # a foreign checkpoint folder fails here; shapes checked later
    return True


def make_input_fn(config: config_lib.TrainConfig, *, training: bool, epochs=None,
                  steps_per_epoch=None, drop_remainder=False, verbose=False):
    """``fn(input_context) -> tf.data.Dataset`` for ``strategy.distribute_datasets_from_function``.

    The dataset is this input pipeline's shard (``input_pipeline_id`` of
    ``num_input_pipelines``, taken before shuffling) in per-replica batches of the global
    ``config.batch_size``. ``training=True`` reads ``config.train_split`` for ``epochs``
    (start, stop), each epoch shuffled and augmented as a function of (seed, epoch);
    ``training=False`` reads ``config.eval_split`` (rotated under ``rotate_train``, fixed seed).
    """
    common = dict(data_dir=config.data_dir, validation_fraction=config.validation_fraction,
                  batch_size=config.batch_size, drop_remainder=drop_remainder,
                  cache=config.cache)

    def input_fn(context):
        if verbose:
            print(f"Input pipeline {context.input_pipeline_id} of "
                  f"{context.num_input_pipelines}: batches of "
                  f"{context.get_per_replica_batch_size(config.batch_size)} per replica")
        if training:
            return data_lib.load_dataset(
                config.dataset, config.train_split, training=True, rotate=config.rotate_train,
                seed=config.seed, input_context=context, epochs=epochs,
                steps_per_epoch=steps_per_epoch, **common)
        # Validate each epoch on the protocol's test set: rotated when training on rotated
        # images.
        return data_lib.load_dataset(config.dataset, config.eval_split, rotate=config.rotate_train,
                                     seed=EVAL_SEED, input_context=context, **common)

    return input_fn


def _training_data(config, strategy, start_epoch: int, verbose: int = 0):
    """Per-worker input pipelines and the steps per epoch every worker runs.

    Training data is the epochs ``start_epoch ..`` of `data_lib.load_dataset(epochs=...)`:
    each epoch's order and augmentation are a pure function of (seed, epoch), so a resumed
    run gets the batches an uninterrupted one gets. Each input pipeline (one per worker) reads
    shard ``input_pipeline_id`` of ``num_input_pipelines``, sharded before shuffling.
    """
    total_epochs = config.epochs + config.center_loss_epochs
    first = min(start_epoch, total_epochs - 1)  # a finished run still needs a valid pipeline
    common = dict(data_dir=config.data_dir, validation_fraction=config.validation_fraction)
    # Only multi_worker uses distribute_datasets_from_function; the default strategy and
    # MirroredStrategy (one worker: Keras splits each global batch across local replicas,
    # including the last partial one) get plain datasets.
    distributed = config.distribute == "multi_worker"
    workers = getattr(strategy.extended, "_num_workers", 1) if distributed else 1
    multi = workers > 1
    steps = {"train": config.steps_per_epoch, "eval": None}
    if distributed:
        # Distributed datasets need explicit step counts, and every worker must run the same
        # number of steps: the smallest shard decides (its last partial batch is dropped).
        per_worker = config.batch_size // workers
        for key, split in (("train", config.train_split), ("eval", config.eval_split)):
            size = int(data_lib.load_dataset(config.dataset, split, batch_size=1,
                                             **common).cardinality())
            count = size // workers // per_worker if multi else math.ceil(size / per_worker)
            if not count:
                raise ValueError(
                    f"batch_size {config.batch_size} is larger than a worker's shard of the "
                    f"{split!r} split ({size // workers} examples); lower batch_size.")
            if steps[key] is None:
                steps[key] = count

    train_fn = make_input_fn(config, training=True, epochs=(first, total_epochs),
                             steps_per_epoch=steps["train"], drop_remainder=multi,
                             verbose=verbose and multi)
    eval_fn = make_input_fn(config, training=False, drop_remainder=multi)
    if not distributed:
        train_data = train_fn(tf.distribute.InputContext())
        eval_data = eval_fn(tf.distribute.InputContext())
        if steps["train"] is None:  # one pass over the split per epoch
            steps["train"] = int(train_data.cardinality()) // (total_epochs - first)
        return train_data, eval_data, steps
    train_data = strategy.distribute_datasets_from_function(train_fn)
    eval_data = strategy.distribute_datasets_from_function(eval_fn)
    return train_data, eval_data, steps


def _final_dense(model):
    for layer in reversed(model.layers):
        if isinstance(layer, tf.keras.layers.Dense):
            return layer
    raise ValueError(
        f"Center loss needs a classifier ending in a Dense layer; {model.name} has none.")


def _ends_in_softmax(model) -> bool:
    return getattr(model.layers[-1], "activation", None) is tf.keras.activations.softmax
