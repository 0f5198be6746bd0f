"""Scoring a trained model, and the model / summary files of a run."""
from __future__ import annotations

import os
import warnings

import larq as lq
import tensorflow as tf

from cbcn_tf import config as config_lib
from cbcn_tf import data as data_lib
from cbcn_tf import files, model_files
from cbcn_tf.errors import ConfigError, DataError, MissingFileError, ModelFileError
from cbcn_tf.summary import summary as cbcn_summary
from cbcn_tf.training.optim import compile_for_classification
from cbcn_tf.training.rundir import MODEL_FILE, RunDir

# Evaluation data always uses this seed, so every run is scored on the same rotated test set.
EVAL_SEED = 0


def evaluate(model, dataset: str, *, split: str = "test", rotate: bool = False,
             angle: float | None = None, batch_size: int = 128, data_dir: str | None = None,
             validation_fraction: float | None = None, verbose: int = 0) -> dict:
    """Top-1 / top-5 accuracy and cross-entropy of ``model`` on one split.

    ``model`` is a Keras model, a ``.h5`` file or a run folder. ``rotate=True`` scores the
    rotated variant (MNIST-rot / CIFAR10-rot angles, fixed seed); ``angle=DEGREES`` scores
    every image turned by that one angle (counter-clockwise; `evaluate_angles` for a sweep).
    The loss is the plain cross-entropy (no weight decay term).

    Example:
        >>> from cbcn_tf.models import create_model
        >>> model = create_model("cbcn_lenet", input_shape=(16, 16, 1), orientations=2)
        >>> scores = evaluate(model, "digits", rotate=True)
        >>> 0.0 <= scores["top1"] <= scores["top5"] <= 1.0
        True
    """
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    check_model_fits_data(model, dataset, data_dir)
    data = data_lib.load_dataset(dataset, split, batch_size=batch_size, data_dir=data_dir,
                                 rotate=rotate, angle=angle, seed=EVAL_SEED,
                                 validation_fraction=validation_fraction)
    return _score(_scorer(model), data, verbose)


def evaluate_angles(model, dataset: str, angles, *, split: str = "test", batch_size: int = 128,
                    data_dir: str | None = None, validation_fraction: float | None = None,
                    verbose: int = 0) -> dict:
    """`evaluate` at each fixed angle of ``angles`` (degrees): ``{angle: scores}``.

    Every image of the split is turned by the same angle (``evaluate(angle=...)``); the split
    is read once (`cbcn_tf.data.load_turned`) and the model compiled once for the whole sweep.
    Angle 0 is the upright score.

    Example:
        >>> from cbcn_tf.models import create_model
        >>> model = create_model("cbcn_lenet", input_shape=(16, 16, 1), orientations=2)
        >>> sorted(evaluate_angles(model, "digits", [0, 90]))
        [0, 90]
    """
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    check_model_fits_data(model, dataset, data_dir)
    scorer = _scorer(model)
    turned = data_lib.load_turned(dataset, split, angles, batch_size=batch_size,
                                  data_dir=data_dir, seed=EVAL_SEED,
                                  validation_fraction=validation_fraction)
    return {angle: _score(scorer, data, verbose) for angle, data in turned.items()}


def _scorer(model):
    # A fresh functional model over the same layers: compiling it leaves ``model``'s
    # optimizer and losses untouched.
    scorer = tf.keras.Model(model.inputs, model.outputs)
    compile_for_classification(scorer)
    return scorer


def _score(scorer, data, verbose):
    values = scorer.evaluate(data, verbose=verbose, return_dict=True)
    return {"top1": values["accuracy"], "top5": values["top5"], "loss": values["loss"]}


def check_model_fits_data(model, dataset: str, data_dir=None) -> None:
    """Refuse to score ``model`` on a dataset whose images or classes it does not take."""
    info = data_lib.dataset_info(dataset, data_dir=data_dir)
    expected = tuple(model.input_shape[1:])
    if expected != tuple(info.input_shape):
        raise DataError(
            f"{model.name} takes inputs of shape {expected} but {dataset} has images of shape "
            f"{tuple(info.input_shape)}; evaluate on the dataset it was trained on (--dataset).")
    if model.output_shape[-1] != info.num_classes:
        raise DataError(
            f"{model.name} predicts {model.output_shape[-1]} classes but {dataset} has "
            f"{info.num_classes}; evaluate on the dataset it was trained on (--dataset).")


def run_eval_options(run, *, dataset=None, split=None, data_dir=None) -> dict:
    """`evaluate`'s dataset, split, data_dir and validation_fraction for the run folder (or
    model file) ``run``: each value given, else the run's config.yaml, else the default."""
    from cbcn_tf.models import pretrained

    entry = pretrained.parse_spec(run)
    if entry is not None:  # packaged weights: their dataset, scored as recorded
        return dict(dataset=dataset or entry.dataset, split=split or entry.split,
                    data_dir=data_dir, validation_fraction=None)
    saved = RunDir(run).saved_config()
    dataset = dataset or (saved and saved.dataset)
    if not dataset:
        raise ConfigError(f"{run} has no {config_lib.CONFIG_FILE}; pass --dataset NAME.")
    return dict(dataset=dataset, split=split or (saved.eval_split if saved else "test"),
                data_dir=data_dir or (saved and saved.data_dir),
                validation_fraction=saved.validation_fraction if saved else None)


def load_model(path, *, trusted: bool = False) -> tf.keras.Model:
    """Load a model saved by `train` (``model.h5``, or the run folder holding it), or a model
    with packaged weights named ``NAME:WEIGHTS`` (``cbcn_lenet:mnist``, `cbcn list-models`).

    The file's config is checked as plain JSON before Keras reads it: anything that could run
    code while loading (a ``Lambda`` layer, a ``TFOpLambda`` calling more than a pure tensor
    op, a class, function or module from outside Keras, larq and cbcn_tf, at any depth) is
    refused (`UntrustedModelError` naming the layer) unless ``trusted=True`` (see
    `cbcn_tf.model_files`). A truncated, foreign or ``.keras`` file raises `ModelFileError`
    naming it.

    Example:
        >>> from cbcn_tf.models import create_model
        >>> model = create_model("cbcn_lenet", input_shape=(16, 16, 1), orientations=2)
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "cbcn_lenet.h5")
        >>> save_model(model, path)
        >>> load_model(path).count_params() == model.count_params()
        True
    """
    from cbcn_tf.models import pretrained  # (also registers the zoo's custom objects)

    entry = pretrained.parse_spec(path)
    if entry is not None:  # NAME:WEIGHTS, e.g. cbcn_lenet:mnist (built, never deserialised)
        return pretrained.build(entry)
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, MODEL_FILE)
    if not os.path.isfile(path):
        raise MissingFileError(
            f"No saved model at {path}; pass a run folder written by `cbcn train` (with "
            f"{MODEL_FILE}) or a .h5 file.")
    model_files.check_model_file(path, trusted=trusted)
    try:
        return tf.keras.models.load_model(path, compile=False)
    except (OSError, KeyError) as exc:  # h5py: a file damaged past its config
        raise ModelFileError(
            f"{path} is a damaged Keras model ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:200]}); copy it again or retrain.") from None


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
