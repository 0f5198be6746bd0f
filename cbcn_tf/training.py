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
epoch with the optimizer state, e.g. after raising ``epochs`` or after the process was killed.

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
import os
import warnings

import larq as lq
import tensorflow as tf

from cbcn_tf import config as config_lib
from cbcn_tf import data as data_lib
from cbcn_tf import plots
from cbcn_tf.summary import summary as cbcn_summary

STRATEGIES = ("none", "mirrored")
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


@dataclasses.dataclass
class TrainResult:
    """What `train` returns: the trained classifier (what ``model.h5`` holds), its optimizer
    (``optimizer.iterations`` counts steps across resumes) and the rows of history.csv."""

    model: tf.keras.Model
    optimizer: tf.keras.optimizers.Optimizer
    history: list
    output_dir: str


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The distribution strategy for ``--distribute NAME``: "none" or "mirrored".

    Example:
        >>> make_strategy("none").num_replicas_in_sync
        1
    """
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    raise ValueError(f"Unknown distribution strategy {name!r}; use one of {', '.join(STRATEGIES)}.")


def lr_schedule(config: config_lib.TrainConfig):
    """Piecewise-constant learning rate over epochs: ``lr * lr_gamma ** #(milestones <= epoch)``.

    The rate depends on the epoch only (Keras passes the current rate as a second argument,
    which is ignored), so a resumed run gets the same rates as an uninterrupted one.

    Example:
        >>> schedule = lr_schedule(config_lib.load_config("cifar10_resnet18_k4"))
        >>> [round(schedule(epoch), 6) for epoch in (0, 59, 60, 120, 160)]
        [0.1, 0.1, 0.02, 0.004, 0.0008]
    """
    milestones = sorted(config.lr_milestones)

    def schedule(epoch: int, current_lr=None) -> float:
        return config.lr * config.lr_gamma ** sum(epoch >= m for m in milestones)

    return schedule


def resolve_config(config: config_lib.TrainConfig) -> config_lib.TrainConfig:
    """Fill ``model_kwargs`` input_shape / num_classes from the dataset unless given."""
    info = data_lib.dataset_info(config.dataset, data_dir=config.data_dir)
    kwargs = {"input_shape": list(info.input_shape), "num_classes": info.num_classes}
    kwargs.update(config.model_kwargs)
    return dataclasses.replace(config, model_kwargs=kwargs)


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
            layer.kernel for layer in _layers(model)
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


def compile_for_classification(model: tf.keras.Model, optimizer=None) -> None:
    """Compile with cross-entropy, top-1 ("accuracy") and top-5 ("top5") metrics."""
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


class _ResumableCSVLogger(tf.keras.callbacks.CSVLogger):
    """CSVLogger in append mode that first drops rows of the epochs this fit will (re)run.

    A run killed after writing epoch e's row but before its backup finished repeats epoch e on
    resume; without the trim, history.csv would list e twice.
    """

    def __init__(self, filename):
        super().__init__(filename, append=True)
        self._opened = False

    def on_train_begin(self, logs=None):
        self._opened = False  # opened at the first epoch, once the restored epoch is known

    def on_epoch_begin(self, epoch, logs=None):
        if not self._opened:
            rows = read_history(self.filename) if os.path.exists(self.filename) else []
            kept = [row for row in rows if int(row["epoch"]) < epoch]
            if len(kept) < len(rows):
                _write_csv(self.filename, kept)
            super().on_train_begin()
            self._opened = True

    def on_train_end(self, logs=None):
        if self._opened:  # a resumed run that was already complete runs no epoch
            super().on_train_end(logs)


# --- runs ------------------------------------------------------------------------------------


def train(config: config_lib.TrainConfig, output_dir: str, *, resume: bool = False,
          verbose: int = 1) -> TrainResult:
    """Train ``config`` into ``output_dir`` (see the module docstring for what is written).

    Refuses (ValueError) an output folder that already holds a run unless ``resume``, and a
    resume whose model / model_kwargs / dataset differ from the saved config.yaml.
    ``verbose`` is Keras' (1: progress bar, 2: one line per epoch, 0: silent).
    """
    config = resolve_config(config)
    output_dir = os.path.abspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    resuming = _check_output_dir(output_dir, config, resume)
    if verbose:
        print(f"{'Resuming' if resuming else 'Training'} {config.model} on {config.dataset} "
              f"in {output_dir}")

    tf.keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    train_data, eval_data = _training_data(config)

    strategy = make_strategy(config.distribute)
    with strategy.scope():
        model = build_model(config)
        add_weight_decay(model, config.weight_decay, config.weight_decay_scope)
        fit_model = model
        if config.center_loss_epochs:
            fit_model = CenterLossModel(model, weight=0.0, alpha=config.center_loss_alpha)
            fit_model(tf.zeros([1, *model.input_shape[1:]]))  # build it for BackupAndRestore
        compile_for_classification(fit_model, make_optimizer(config))

    config_lib.save_config(config, os.path.join(output_dir, config_lib.CONFIG_FILE))
    write_summary(model, os.path.join(output_dir, SUMMARY_FILE))

    history_path = os.path.join(output_dir, HISTORY_FILE)
    callbacks = [
        tf.keras.callbacks.LearningRateScheduler(lr_schedule(config)),
        # Logged before the backup: a kill in between repeats the epoch (the logger trims).
        _ResumableCSVLogger(history_path),
        # Saves weights + optimizer state + epoch at every epoch end; kept after training so
        # that a later --resume with more epochs continues.
        tf.keras.callbacks.BackupAndRestore(os.path.join(output_dir, BACKUP_DIR),
                                            delete_checkpoint=False),
    ]
    if config.center_loss_epochs:
        callbacks.append(_CenterLossStage(config.epochs, config.center_loss_weight))
    if config.tensorboard:
        callbacks.append(tf.keras.callbacks.TensorBoard(
            os.path.join(output_dir, TENSORBOARD_DIR), write_graph=False, profile_batch=0))

    fit_model.fit(train_data, epochs=config.epochs + config.center_loss_epochs,
                  steps_per_epoch=config.steps_per_epoch, validation_data=eval_data,
                  callbacks=callbacks, verbose=verbose)

    save_model(model, os.path.join(output_dir, MODEL_FILE))
    history = read_history(history_path)
    plots.plot_curves({config.model: history}, os.path.join(output_dir, CURVES_FILE))
    return TrainResult(model, fit_model.optimizer, history, output_dir)


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
    tmp = f"{path}.tmp"
    with warnings.catch_warnings():  # HDF5 is chosen on purpose: it reloads CBConv2D exactly
        warnings.filterwarnings("ignore", "You are saving your model as an HDF5 file")
        model.save(tmp, save_format="h5", include_optimizer=False)
    os.replace(tmp, path)


def summary_text(model: tf.keras.Model) -> str:
    """``larq.models.summary`` (with Larq's memory estimate) followed by ``cbcn_tf.summary``."""
    lines = []
    lq.models.summary(model, print_fn=lines.append)
    cbcn_summary(model, print_fn=lines.append)
    return "\n".join(lines) + "\n"


def write_summary(model: tf.keras.Model, path) -> str:
    text = summary_text(model)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)
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


def _write_csv(path, rows) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        if rows:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    os.replace(tmp, path)


def _check_output_dir(output_dir: str, config, resume: bool) -> bool:
    """Return whether there is a run to resume; raise ValueError for a folder we must not use."""
    config_path = os.path.join(output_dir, config_lib.CONFIG_FILE)
    has_run = os.path.exists(config_path) or os.path.isdir(os.path.join(output_dir, BACKUP_DIR))
    if has_run and not resume:
        raise ValueError(
            f"{output_dir} already holds a training run; pass --resume (resume=True) to continue "
            "it, or choose another output folder.")
    if has_run and os.path.exists(config_path):
        saved = config_lib.read_config(config_path)
        for key in _RESUME_KEYS:
            if getattr(saved, key) != getattr(config, key):
                raise ValueError(
                    f"Cannot resume {output_dir}: its {key} is {getattr(saved, key)!r} but this "
                    f"run asks for {getattr(config, key)!r} ({', '.join(_RESUME_KEYS)} must match "
                    "the saved config.yaml). Use the same settings or another output folder.")
    return has_run


def _training_data(config):
    common = dict(batch_size=config.batch_size, data_dir=config.data_dir,
                  validation_fraction=config.validation_fraction)
    train_data = data_lib.load_dataset(config.dataset, config.train_split, training=True,
                                       rotate=config.rotate_train, seed=config.seed, **common)
    if config.steps_per_epoch:
        train_data = train_data.repeat()
    # Validate each epoch on the protocol's test set: rotated when training on rotated images.
    eval_data = data_lib.load_dataset(config.dataset, config.eval_split, rotate=config.rotate_train,
                                      seed=EVAL_SEED, **common)
    return train_data, eval_data


def _layers(model):
    return [m for m in model.submodules if isinstance(m, tf.keras.layers.Layer)]


def _final_dense(model):
    for layer in reversed(model.layers):
        if isinstance(layer, tf.keras.layers.Dense):
            return layer
    raise ValueError(
        f"Center loss needs a classifier ending in a Dense layer; {model.name} has none.")


def _ends_in_softmax(model) -> bool:
    return getattr(model.layers[-1], "activation", None) is tf.keras.activations.softmax
