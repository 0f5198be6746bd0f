"""Checks on a saved Keras ``.h5`` model before Keras deserialises any of it.

Loading a Keras model file runs what its config names: a ``Lambda`` layer carries Python
bytecode, a ``TFOpLambda`` layer calls whichever TensorFlow API function its ``function`` field
names (``io.write_file`` writes any file), a ``module`` key makes Keras import that module, and a
name registered by any imported package runs that package's code. So a model file from
elsewhere is read as plain JSON first and refused unless everything in it is on an allow-list:

- every ``class_name`` (layers, nested models, wrappers, initializers, regularizers,
  constraints, quantizers, activations) is a Keras, larq or cbcn_tf class or function, and not
  one that stores code, builds raw TensorFlow ops or reads files (`REFUSED_CLASSES`);
- every ``activation`` / ``*_initializer`` / ``*_regularizer`` / ``*_constraint`` /
  ``*_quantizer`` string is such a name (no dotted or module paths);
- every ``module`` is inside Keras, larq or cbcn_tf and every ``registered_name`` is an
  allowed name;
- a ``TFOpLambda`` / ``SlicingOpLambda`` calls one of the pure tensor operations in
  `TENSOR_OPS`, and its call arguments are plain data (numbers, strings, lists);
- no other string names a function registered from outside Keras, larq and cbcn_tf (Keras
  turns such strings into that function).

The caller can vouch for a file with ``trusted=True`` (``cbcn evaluate/convert --trust-model``).

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
import re
import zipfile

from cbcn_tf.errors import ModelFileError, UntrustedModelError

# Packages whose classes and functions a model file may name without being trusted.
TRUSTED_PACKAGES = ("tf_keras", "keras", "larq", "cbcn_tf")
# A ``module`` value Keras may import: a trusted package or one of its public submodules.
_MODULE = re.compile(r"(%s)(\.[A-Za-z][A-Za-z0-9_]*)*" % "|".join(TRUSTED_PACKAGES))

# Keras classes that are refused although Keras defines them, and why.
REFUSED_CLASSES = {
    "Lambda": "stores Python bytecode that runs while the file loads",
    "TensorFlowOpLayer": "builds a raw TensorFlow op named in the file",
    "ClassMethod": "calls a TensorFlow method named in the file",
    "InstanceMethod": "calls a tensor method named in the file",
    "InstanceProperty": "reads a tensor attribute named in the file",
    "DropoutWrapper": "can store Python bytecode",
    "ResidualWrapper": "can store Python bytecode",
    "DeviceWrapper": "places ops on a device named in the file",
    "_RNNCellWrapper": "can store Python bytecode",
    "DenseFeatures": "builds feature columns that can name functions",
    "SequenceFeatures": "builds feature columns that can name functions",
    "LinearModel": "builds feature columns that can name functions",
    "WideDeepModel": "builds feature columns that can name functions",
    "TextVectorization": "reads a vocabulary file named in the file",
    "StringLookup": "reads a vocabulary file named in the file",
    "IntegerLookup": "reads a vocabulary file named in the file",
}
# Keras' layers that call the TensorFlow API function their config names.
OP_LAYERS = ("TFOpLambda", "SlicingOpLambda")
# Pure tensor operations a TFOpLambda / SlicingOpLambda may call, as tf-keras writes them (the
# TensorFlow API name without "tf."): arithmetic, shape, reductions, activations, image turns.
TENSOR_OPS = frozenset("""
__operators__.add __operators__.getitem __operators__.ne __operators__.eq
math.add math.add_n math.subtract math.multiply math.divide math.truediv math.negative
math.abs math.sign math.square math.sqrt math.rsqrt math.exp math.log math.pow
math.reciprocal math.floor math.ceil math.round math.rint math.floormod math.erf
math.maximum math.minimum math.sigmoid math.tanh math.softplus math.l2_normalize
math.squared_difference math.cumsum math.argmax math.argmin
math.greater math.greater_equal math.less math.less_equal math.equal math.not_equal
math.logical_and math.logical_or math.logical_not
math.reduce_mean math.reduce_sum math.reduce_max math.reduce_min math.reduce_prod
math.reduce_std math.reduce_variance math.reduce_logsumexp math.reduce_euclidean_norm
math.reduce_all math.reduce_any compat.v1.floor_div compat.v1.norm
linalg.matmul einsum
concat stack unstack split reshape expand_dims compat.v1.squeeze squeeze
compat.v1.transpose transpose tile compat.v1.pad pad roll reverse broadcast_to
compat.v1.gather gather where cast identity stop_gradient clip_by_value
ones_like zeros_like compat.v1.shape shape one_hot
nn.relu nn.relu6 nn.elu nn.selu nn.gelu nn.silu nn.leaky_relu nn.softmax nn.log_softmax
nn.sigmoid nn.tanh nn.bias_add nn.dropout nn.avg_pool2d nn.max_pool2d nn.depth_to_space
nn.space_to_depth nn.l2_normalize nn.moments
image.rot90 image.flip_left_right image.flip_up_down image.resize
""".split())
# JSON shapes Keras decodes into plain values (tuples, Ellipsis, shapes, bytes).
DATA_CLASSES = ("__tuple__", "__ellipsis__", "TensorShape", "__bytes__")
# Config fields whose string value Keras resolves to a class or function by name.
_NAMED_FIELDS = re.compile(r"(.*_)?activation|.*_(initializer|regularizer|constraint|quantizer)")
# Keys under which a config holds a layer (or a model's layers).
_LAYER_KEYS = ("layers", "layer", "forward_layer", "backward_layer", "cell", "cells")
_NOT_NAMES = ("get", "serialize", "deserialize")
# Activation names Keras maps to TensorFlow functions rather than its own.
TF_ACTIVATIONS = ("leaky_relu", "log_softmax", "relu6", "silu")
# Keys whose strings are layer names or are checked with the object that holds them.
_CHECKED_KEYS = ("name", "class_name", "module", "registered_name")


def read_model_config(path) -> dict:
    """The ``model_config`` JSON of a Keras HDF5 file; `ModelFileError` if it has none."""
    import h5py

    path = os.fspath(path)
    if zipfile.is_zipfile(path):
        raise ModelFileError(
            f"{path} is a Keras v3 archive (.keras zip); cbcn reads only Keras .h5 files and "
            "run folders. Re-save the model as HDF5 with tf.keras (model.save('x.h5')) and "
            "pass that file.")
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
        config = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        config = None
    if not isinstance(config, dict):
        raise ModelFileError(
            f"{path} holds a damaged model config; copy the file again or retrain.")
    return config


def _trusted(obj) -> bool:
    module = getattr(obj, "__module__", None) or ""
    return module.split(".")[0] in TRUSTED_PACKAGES


def trusted_names() -> dict:
    """Every name a model file may use for a class or function: Keras' layers, initializers,
    regularizers, constraints and activations, larq's and cbcn_tf's registered objects."""
    import larq as lq
    import tensorflow as tf
    from tf_keras.src import activations as keras_activations
    from tf_keras.src import initializers as keras_initializers
    from tf_keras.src.layers import serialization as keras_layers

    import cbcn_tf.models  # noqa: F401  (registers the zoo's and the exporter's classes)
    from cbcn_tf import converters  # noqa: F401

    keras_layers.populate_deserializable_objects()  # the tables Keras resolves names in
    keras_initializers.populate_deserializable_objects()
    tables = [keras_layers.LOCAL.ALL_OBJECTS, keras_initializers.LOCAL.ALL_OBJECTS,
              tf.keras.utils.get_custom_objects(), {"Policy": tf.keras.mixed_precision.Policy}]
    for module in (tf.keras.layers, tf.keras.initializers, tf.keras.regularizers,
                   tf.keras.constraints, tf.keras.activations, lq.layers, lq.quantizers,
                   lq.constraints, lq.activations):
        tables.append({name: getattr(module, name) for name in dir(module)})
    tables.append({name: getattr(keras_activations, name) for name in TF_ACTIVATIONS
                   if hasattr(keras_activations, name)})
    names = {}
    for table in tables:
        for name, obj in table.items():
            if (callable(obj) and (_trusted(obj) or name in TF_ACTIVATIONS)
                    and not name.startswith("_")
                    and name not in _NOT_NAMES and name not in REFUSED_CLASSES):
                names.setdefault(name, obj)
    return names


class _Checker:
    """Walks a model config as plain JSON and collects what it would run."""

    def __init__(self):
        import tensorflow as tf

        self.names = trusted_names()
        self.registered = tf.keras.utils.get_custom_objects()
        self.problems = []

    def walk(self, config) -> list:
        stack = [(config, None, _layer_label(config) or "the model", False)]
        while stack:
            item, key, layer, in_call = stack.pop()
            if isinstance(item, str):
                if not in_call:
                    self.check_string(key, item, layer)
            elif isinstance(item, list):
                stack.extend((value, key, layer, in_call) for value in reversed(item))
            elif isinstance(item, dict):
                if key in _LAYER_KEYS:
                    layer = _layer_label(item) or layer
                if "class_name" in item:
                    self.check_object(item, key, layer, in_call)
                stack.extend((value, name, layer, in_call or name == "inbound_nodes")
                             for name, value in reversed(list(item.items())))
        return self.problems

    def refuse(self, layer, reason):
        self.problems.append(f"{layer} {reason}")

    def check_object(self, item, key, layer, in_call):
        cls = item["class_name"]
        where = f" in {key}" if key and key not in _LAYER_KEYS + ("config",) else ""
        if not isinstance(cls, str):
            return self.refuse(layer, f"has a class_name{where} that is not a string")
        if cls in DATA_CLASSES:
            return None
        if in_call:
            return self.refuse(layer, f"passes a {cls!r} object to a call; call arguments "
                                      "must be plain data")
        module = item.get("module")
        if module is not None and not (isinstance(module, str) and _MODULE.fullmatch(module)):
            self.refuse(layer, f"names module {module!r}{where}, outside "
                               "Keras, larq and cbcn_tf")
        registered = item.get("registered_name")
        if registered not in (None, cls) and not (isinstance(registered, str)
                                                  and registered in self.names):
            self.refuse(layer, f"names registered_name {registered!r}{where}, not a Keras, "
                               "larq or cbcn_tf name")
        if cls == "function":
            name = item.get("config")
            if not (isinstance(name, str) and name in self.names):
                self.refuse(layer, f"names function {name!r}{where}, not a Keras, larq or "
                                   "cbcn_tf function")
        elif cls in OP_LAYERS:
            config = item.get("config")
            function = config.get("function") if isinstance(config, dict) else None
            if not (isinstance(function, str) and function in TENSOR_OPS):
                self.refuse(layer, f"calls tf.{function}, which is not a pure tensor "
                                   "operation")
        elif cls in REFUSED_CLASSES:
            self.refuse(layer, f"is a {cls} layer, which {REFUSED_CLASSES[cls]}")
        elif cls not in self.names and not self.names_class(registered, cls):
            self.refuse(layer, f"names {cls!r}{where}, not a Keras, larq or cbcn_tf class")
        return None

    def names_class(self, registered, cls) -> bool:
        """Whether ``registered_name`` is an allowed name for a class called ``cls`` (how
        Keras writes registered classes inside nested models)."""
        target = self.names.get(registered) if isinstance(registered, str) else None
        return getattr(target, "__name__", None) == cls

    def check_string(self, key, value, layer):
        if key is None or key in _CHECKED_KEYS:
            return
        if _NAMED_FIELDS.fullmatch(key):
            if value not in self.names:
                self.refuse(layer, f"sets {key}={value!r}, not a Keras, larq or cbcn_tf name")
        elif value in self.registered and not _trusted(self.registered[value]):
            self.refuse(layer, f"sets {key}={value!r}, which names an object registered "
                               "from outside Keras, larq and cbcn_tf")


def _layer_label(item) -> str | None:
    """``layer 'conv1' (Conv2D)`` for a layer's config dict, else None."""
    if not isinstance(item, dict) or not isinstance(item.get("class_name"), str):
        return None
    config = item.get("config")
    name = item.get("name") or (config.get("name") if isinstance(config, dict) else None)
    if not isinstance(name, str):
        return None
    return f"layer {name!r} ({item['class_name']})"


def untrusted_parts(config) -> list:
    """What in ``config`` would run code from outside Keras, larq and cbcn_tf or call more
    than a pure tensor operation, one phrase each (empty: safe to load)."""
    return _Checker().walk(config)


def check_model_file(path, *, trusted: bool = False) -> None:
    """Raise `ModelFileError` for a file that is not a Keras .h5 model, and
    `UntrustedModelError` (unless ``trusted``) for one whose config could run code."""
    config = read_model_config(path)
    if trusted:
        return
    problems = list(dict.fromkeys(untrusted_parts(config)))
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UntrustedModelError(
            f"{os.fspath(path)}: {problems[0]}{more}; loading runs what a model file names, so "
            "cbcn loads only files naming Keras, larq and cbcn_tf classes and pure tensor ops. "
            "Load it only if you trust its source: --trust-model (Python: trusted=True).")
