"""One registry of model functions: ``register_model``, ``create_model``, ``list_models``.

Example:
    >>> from cbcn_tf.models import create_model, list_models
    >>> "cbcn_resnet18" in list_models()
    True
    >>> create_model("cbcn_lenet", orientations=2).output_shape
    (None, 10)
"""
from __future__ import annotations

import os
from typing import Callable

import tensorflow as tf

_MODELS: dict[str, Callable[..., tf.keras.Model]] = {}


def register_model(fn: Callable[..., tf.keras.Model]) -> Callable[..., tf.keras.Model]:
    """Decorator: make a keyword-only model function available under its own name."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"A model named {fn.__name__!r} is already registered.")
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_MODELS)


def create_model(name: str, **kwargs) -> tf.keras.Model:
    """Build the registered model ``name``; ``kwargs`` go to its model function."""
    if name not in _MODELS:
        raise ValueError(f"Unknown model {name!r}. Valid names: {', '.join(list_models())}.")
    return _MODELS[name](**kwargs)


def load_weights(model: tf.keras.Model, path: str | os.PathLike | None) -> tf.keras.Model:
    """Load a ``model.save_weights`` file (HDF5 or TF checkpoint) into ``model``, or do nothing.

    Raises ValueError naming the file when it was saved from another architecture, instead of
    Keras' layer-count / shape messages or a checkpoint that silently restores only a part.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "lenet.h5")
        >>> create_model("cbcn_lenet", orientations=2).save_weights(path)
        >>> load_weights(create_model("cbcn_lenet", orientations=2), path).name
        'cbcn_lenet'
    """
    if path is None:
        return model
    path = os.fspath(path)
    if not (os.path.exists(path) or os.path.exists(path + ".index")):
        raise FileNotFoundError(f"Weights file {path!r} does not exist.")
    try:
        status = model.load_weights(path)
        if status is not None:  # TF checkpoint: Keras accepts one that restores only a part
            status.assert_existing_objects_matched()
            status.expect_partial()  # extra values (e.g. optimizer slots) are fine
    except (ValueError, AssertionError) as exc:
        raise ValueError(
            f"Weights file {path!r} does not match the model {model.name!r} (saved from another "
            f"architecture or other settings such as orientations / kernel_stage): {exc}"
        ) from exc
    return model
