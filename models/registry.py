"""One registry of model functions and their metadata: ``register_model``, ``create_model``,
``list_models``, ``model_min_input_size``.

Example:
    >>> from cbcn_tf.models import create_model, list_models
    >>> "cbcn_resnet18" in list_models()
    True
    >>> create_model("cbcn_lenet", orientations=2).output_shape
    (None, 10)
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Callable

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class Cost:
    """A model's cost at its defaults (``cbcn_tf.summary``), as its docstring states it.

    The tests check every docstring against ``cbcn_tf.summary``, so these stay true.
    """

    params: int
    bops: int
    flops: int
    twin_params: int
    twin_flops: int

    def paragraph(self, name: str, input_shape, example: str) -> str:
        """The docstring's cost paragraph and example (``example``: keyword arguments)."""
        return _COST_AND_EXAMPLE.format(shape="x".join(map(str, input_shape)), name=name,
                                        example=example, **dataclasses.asdict(self))


_COST_AND_EXAMPLE = """
    Cost at the defaults ({shape} input, cbcn_tf.summary): {params:,} parameters,
    {bops:,} BOPs (binary MACs), {flops:,} FLOPs (float MACs); the binary=False
    twin: {twin_params:,} parameters, {twin_flops:,} FLOPs.

    Example:
        >>> {name}({example}).output_shape
        (None, 10)
    """


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """A registered model: its keyword-only function and its metadata (as timm's default_cfgs).

    ``min_input_size``: smallest input height / width, the product of the model's strides, so
    every stride-2 conv / pool still halves a map of at least 2x2 (smaller inputs build, since
    all padding is "same", but the last stages then run on 1x1 maps padded with constants).
    """

    fn: Callable[..., tf.keras.Model]
    min_input_size: int | None = None


_MODELS: dict[str, ModelEntry] = {}


def register_model(fn: Callable[..., tf.keras.Model] | None = None, *,
                   min_input_size: int | None = None):
    """Decorator: make a keyword-only model function available under its own name.

    Use it bare (``@register_model``) or with metadata
    (``@register_model(min_input_size=8)``); either way it returns the function unchanged.
    """
    if fn is None:
        return functools.partial(register_model, min_input_size=min_input_size)
    if fn.__name__ in _MODELS:
        raise ValueError(f"A model named {fn.__name__!r} is already registered.")
    _MODELS[fn.__name__] = ModelEntry(fn, min_input_size)
    return fn


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_MODELS)


def _entry(name: str) -> ModelEntry:
    if name not in _MODELS:
        raise ValueError(f"Unknown model {name!r}. Valid names: {', '.join(list_models())}.")
    return _MODELS[name]


def create_model(name: str, **kwargs) -> tf.keras.Model:
    """Build the registered model ``name``; ``kwargs`` go to its model function."""
    return _entry(name).fn(**kwargs)


def model_min_input_size(name: str) -> int | None:
    """Smallest input height / width of the registered model ``name`` (None: not recorded).

    Example:
        >>> model_min_input_size("cbcn_resnet18_imagenet")
        32
    """
    return _entry(name).min_input_size


def load_weights(model: tf.keras.Model, path: str | os.PathLike | None) -> tf.keras.Model:
    """Load a ``model.save_weights`` file (HDF5 or TF checkpoint) into ``model``, or do nothing.

    ``path`` may also name weights packaged with cbcn_tf (``"mnist"``: see
    `cbcn_tf.models.pretrained`), found by ``model.name`` and checked by sha256.

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
    from cbcn_tf.models import pretrained

    if pretrained.is_weights_name(path):  # packaged weights, e.g. weights="mnist"
        path = pretrained.find(model.name, path).path()
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
