"""Checks on a saved Keras ``.h5`` model before Keras deserialises it.

Loading a Keras model file runs whatever its config names: a ``Lambda`` layer carries Python
bytecode that runs on load, and a layer class registered by any imported package runs that
package's code. A model file from elsewhere is therefore refused unless every class its
config names comes from Keras, larq or cbcn_tf and it holds no ``Lambda`` layer; the caller
can vouch for a file with ``trusted=True`` (``cbcn evaluate/convert --trust-model``).

Example:
    >>> import cbcn_tf, tempfile, os
    >>> from cbcn_tf import training
    >>> from cbcn_tf.models import create_model
    >>> path = os.path.join(tempfile.mkdtemp(), "m.h5")
    >>> training.save_model(create_model("cbcn_lenet", input_shape=(16, 16, 1)), path)
    >>> check_model_file(path)  # zoo models pass
"""
from __future__ import annotations

import json
import os

from cbcn_tf.errors import ModelFileError, UntrustedModelError

# Modules whose classes a model file may name without being trusted.
TRUSTED_MODULES = ("tf_keras.", "keras.", "larq.", "cbcn_tf.", "tensorflow.")
# Keras classes that deserialise code: Lambda unmarshals Python bytecode.
CODE_CLASSES = ("Lambda",)
# Keras' own containers and the TF-op wrappers it writes for functional models (they name a
# TensorFlow API function, not code).
KERAS_CONTAINERS = ("Functional", "Sequential", "Model", "TFOpLambda", "SlicingOpLambda")


def read_model_config(path) -> dict:
    """The ``model_config`` JSON of a Keras HDF5 file; `ModelFileError` if it has none."""
    import h5py

    path = os.fspath(path)
    try:
        with h5py.File(path, "r") as handle:
            raw = handle.attrs.get("model_config")
    except OSError as exc:  # h5py: truncated file, not HDF5, ...
        reason = " ".join(str(exc).split())
        raise ModelFileError(
            f"{path} is not a readable Keras .h5 model ({reason}); it may be truncated or "
            "damaged: copy it again or retrain (cbcn train writes RUN/model.h5).") from None
    if raw is None:
        raise ModelFileError(
            f"{path} is an HDF5 file without a Keras model config (weights only?); pass a "
            "model saved by cbcn train (RUN/model.h5) or tf.keras.Model.save(..., 'x.h5').")
    try:
        return json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except (ValueError, UnicodeDecodeError):
        raise ModelFileError(
            f"{path} holds a damaged model config; copy the file again or retrain.") from None


def class_names(config) -> list:
    """Every ``class_name`` in a Keras config (layers, initializers, quantizers, ...)."""
    found = []
    stack = [config]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("class_name"), str):
                found.append(item["class_name"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def untrusted_classes(config) -> list:
    """The class names of ``config`` that would run code from outside Keras, larq, cbcn_tf."""
    import tensorflow as tf

    import cbcn_tf.models  # noqa: F401  (registers the zoo's and the exporter's classes)
    from cbcn_tf import converters  # noqa: F401

    custom = tf.keras.utils.get_custom_objects()
    modules = (tf.keras.layers, tf.keras.initializers, tf.keras.regularizers,
               tf.keras.constraints, tf.keras.activations)
    bad = []
    for name in dict.fromkeys(class_names(config)):
        if name in CODE_CLASSES:
            bad.append(name)
            continue
        if name in KERAS_CONTAINERS:
            continue
        target = custom.get(name)
        if target is None:
            target = next((getattr(m, name) for m in modules if hasattr(m, name)), None)
        module = getattr(target, "__module__", "") or ""
        if target is None or not module.startswith(TRUSTED_MODULES):
            bad.append(name)
    return bad


def check_model_file(path, *, trusted: bool = False) -> None:
    """Raise `ModelFileError` for a file that is not a Keras model, and
    `UntrustedModelError` (unless ``trusted``) for one whose config would run code."""
    config = read_model_config(path)
    if trusted:
        return
    bad = untrusted_classes(config)
    if bad:
        raise UntrustedModelError(
            f"{os.fspath(path)} names {', '.join(sorted(bad))}: loading it would run code "
            "stored in the file or from outside Keras, larq and cbcn_tf. Load it only if you "
            "trust its source: --trust-model (Python: trusted=True).")
