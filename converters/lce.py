"""Export Keras 2 / Larq models to Larq Compute Engine (LCE) and plain TFLite flatbuffers.

Every export is checked before anything is written:

1. *Refusals*: a Keras 3 model, a mixed-precision layer, an input without a fixed size.
2. *Materialisation*: each ``CBConv2D`` becomes a plain binary ``QuantConv2D`` holding sign(E)
   followed by a rank-1 ``ChannelScale`` (alpha); LCE folds the scale into the ``LceBconv2d``.
   The LCE converter then sees the same graph as for any Larq binary conv, whatever K and size.
3. *Op audit* (:func:`audit_ops`): one ``LceBconv2d`` per binary convolution of the Keras model,
   no Flex / unknown custom ops. A binary layer that stayed float is an error (``strict``).
4. *Parity* (``verify``): the flatbuffer, run by the interpreter, must match Keras on seeded
   random inputs: sample ``i`` matches when ``max|tflite_i - keras_i| <= atol + rtol *
   max|keras|``; more than half the samples off is an error, fewer a warning (:class:`Parity`).
5. *Atomic write*: a temp file in the destination folder, then ``os.replace``.

Example:
    >>> import cbcn_tf, tensorflow as tf
    >>> from cbcn_tf.converters import export_lce
    >>> x = tf.keras.Input((16, 16, 8))
    >>> y = cbcn_tf.CBConv2D(8, 3, orientations=4)(x)
    >>> result = export_lce(tf.keras.Model(x, y), "/tmp/cbconv.tflite")
    >>> result.ops["LceBconv2d"], result.parity.ok
    (1, True)
"""
from __future__ import annotations

import collections
import dataclasses
import os
import re
import tempfile
import warnings

import larq as lq
import larq_compute_engine as lce
import numpy as np
import tensorflow as tf
from larq_compute_engine.mlir.python import tflite_schema

from cbcn_tf import files
from cbcn_tf.errors import ExportError
from cbcn_tf import summary as cbcn_summary
from cbcn_tf.summary import is_binary_layer, iter_layers
from cbcn_tf.layers import CBConv2D

# Custom ops the LCE runtime registers; any other custom op (incl. Flex*) cannot run.
LCE_CUSTOM_OPS = frozenset({"LceBconv2d", "LceQuantize", "LceDequantize", "LceBMaxPool2d"})
_BUILTIN_NAMES = {
    code: name for name, code in vars(tflite_schema.BuiltinOperator).items()
    if not name.startswith("_")
}
# Suffix of the binary conv that replaces a CBConv2D; the ChannelScale keeps the CBConv's name
# so every consumer stays wired to it.
_BINARY_SUFFIX = "_binary"


class FloatFallbackWarning(UserWarning):
    """A binary layer was exported as a float op (``strict=False``)."""


@tf.keras.utils.register_keras_serializable(package="cbcn_tf")
class ChannelScale(tf.keras.layers.Layer):
    """``activation(x * scale + bias)`` with rank-1 ``(C,)`` constants.

    The tail of a materialised CBConv2D: LCE fuses a per-channel multiply (and bias) that
    directly follows a binary conv into the ``LceBconv2d``. The scale must be rank-1; a
    ``(1, 1, 1, C)`` multiplier converts but fails at ``AllocateTensors``.

    Example:
        >>> layer = ChannelScale()
        >>> layer(tf.ones((1, 2, 2, 3))).shape
        TensorShape([1, 2, 2, 3])
    """

    def __init__(self, use_bias: bool = False, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.use_bias = bool(use_bias)
        self.activation = tf.keras.activations.get(activation)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        self.scale = self.add_weight(name="scale", shape=(channels,), initializer="ones",
                                     trainable=False)
        self.bias = self.add_weight(name="bias", shape=(channels,), initializer="zeros",
                                    trainable=False) if self.use_bias else None
        super().build(input_shape)

    def call(self, inputs):
        outputs = inputs * self.scale
        if self.bias is not None:
            outputs = outputs + self.bias
        return self.activation(outputs)

    def get_config(self):
        return {**super().get_config(), "use_bias": self.use_bias,
                "activation": tf.keras.activations.serialize(self.activation)}


@dataclasses.dataclass(frozen=True)
class OpAudit:
    """Operators of a TFLite flatbuffer (all subgraphs).

    ``ops`` is a list of ``(op_name, tensor_names)``: builtin ops by their schema name
    (``CONV_2D``), custom ops by their custom code (``LceBconv2d``, ``FlexSvd``).
    """

    ops: tuple

    @property
    def counts(self) -> dict:
        return dict(collections.Counter(name for name, _ in self.ops))

    @property
    def bconv_count(self) -> int:
        return self.counts.get("LceBconv2d", 0)

    @property
    def unsupported_ops(self) -> tuple:
        """Custom ops neither TFLite nor LCE implement (Flex / select-TF ops and the like)."""
        return tuple((name, tensors) for name, tensors in self.ops
                     if not name.isupper() and name not in LCE_CUSTOM_OPS)

    def ops_touching(self, layer_name: str, op_name: str) -> int:
        """How many ``op_name`` ops read or write a tensor of Keras layer ``layer_name``.

        Tensor names carry the layer scope (``model/cb1_binary/approx_sign/Sign``), possibly
        truncated, so a miss means "not found by name", not proof of absence.
        """
        pattern = re.compile(rf"(^|[/;]){re.escape(layer_name)}/")
        return sum(1 for name, tensors in self.ops
                   if name == op_name and any(pattern.search(t) for t in tensors))


@dataclasses.dataclass(frozen=True)
class Parity:
    """Keras vs interpreter on seeded random inputs.

    ``sample_diffs[i]`` is ``max|converted - keras|`` over all outputs of sample ``i``; a sample
    matches when it is ``<= tolerance = atol + rtol * output_scale`` with ``output_scale`` the
    largest ``|keras output|``. ``ok`` means at most half the samples mismatch: a conversion
    error (a wrong pad, a mis-fused scale) is systematic and shows on every input, while a
    pre-sign activation within float rounding of zero flips one bit on one input only, which a
    deep binary net can amplify beyond any fixed tolerance.
    """

    sample_diffs: tuple
    output_scale: float
    tolerance: float

    @property
    def samples(self) -> int:
        return len(self.sample_diffs)

    @property
    def max_abs_diff(self) -> float:
        return max(self.sample_diffs)

    @property
    def mismatched(self) -> int:
        return sum(diff > self.tolerance for diff in self.sample_diffs)

    @property
    def ok(self) -> bool:
        return self.mismatched <= self.samples // 2

    def __str__(self) -> str:
        return (f"{self.samples - self.mismatched}/{self.samples} seeded random inputs within "
                f"{self.tolerance:.3g} (= atol + rtol * {self.output_scale:.3g}); worst "
                f"max|diff| = {self.max_abs_diff:.3g}")


class ParityWarning(UserWarning):
    """Some (at most half) of the parity samples differ beyond the tolerance."""


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What an export wrote and what was checked.

    Attributes:
        path: the written .tflite file.
        bytes: its size.
        ops: op name -> count (``result.ops["LceBconv2d"]``).
        binary_layers: Keras binary layers expected to become ``LceBconv2d`` ops.
        float_binary_layers: binary layers left in float (empty unless ``strict=False``).
        parity: the Keras vs interpreter comparison, or None with ``verify=False``.
    """

    path: str
    bytes: int
    ops: dict
    binary_layers: tuple = ()
    float_binary_layers: tuple = ()
    parity: Parity | None = None


# --------------------------------------------------------------------------------- refusals
def check_exportable(model) -> None:
    """Raise TypeError / ValueError naming the problem and its fix if ``model`` cannot export."""
    if not isinstance(model, tf.keras.Model):
        module = type(model).__module__
        if module.split(".")[0] == "keras":
            raise TypeError(
                f"{type(model).__name__} from {module!r} is a Keras 3 model; the LCE converter "
                "needs a Keras 2 (tf_keras) model. Rebuild it after `import cbcn_tf` (which "
                "selects Keras 2 via TF_USE_LEGACY_KERAS=1), e.g. with "
                "cbcn_tf.models.create_model(...), and load the weights into it."
            )
        raise TypeError(f"Expected a tf.keras.Model (tf_keras), got {type(model).__name__}.")
    mixed = [layer.name for layer in iter_layers(model)
             if not isinstance(layer, tf.keras.layers.InputLayer)
             and (layer.compute_dtype != "float32" or layer.variable_dtype != "float32")]
    if mixed:
        raise ExportError(
            f"Layers {mixed} do not compute in float32 (mixed precision); LCE and TFLite need a "
            "float32 model. Clone it: tf.keras.mixed_precision.set_global_policy('float32'), "
            "rebuild the same architecture, then new_model.set_weights(model.get_weights())."
        )
    if not model.inputs:
        raise ExportError(
            f"{model.name} has no defined inputs; export needs a functional or Sequential "
            "model with tf.keras.Input(shape) (or a subclassed model called on tf.keras.Input)."
        )
    for tensor in model.inputs:
        if None in tensor.shape[1:]:
            raise ExportError(
                f"Input {tensor.name!r} has shape {tensor.shape}; export needs a fixed size "
                "except for the batch, e.g. create_model(..., input_shape=(32, 32, 3))."
            )


# --------------------------------------------------------------------------- binary layers
def _is_binary_conv2d(layer) -> bool:
    return isinstance(layer, lq.layers.QuantConv2D) and is_binary_layer(layer)


# ------------------------------------------------------------------------- materialisation
def _binary_kernel_and_scale(layer: CBConv2D):
    """sign(E) and the per-channel multiplier alpha * |quantised E| as NumPy arrays."""
    quantized = layer.expanded_kernel(quantized=True).numpy()
    magnitude = np.abs(quantized).max(axis=(0, 1, 2))
    if not np.allclose(np.abs(quantized), magnitude, rtol=1e-6, atol=0.0):
        raise ExportError(
            f"{layer.name}: kernel quantizer {layer.kernel_quantizer!r} does not give +-m per "
            "output channel, so it has no 1-bit deployment; use a sign-type kernel quantizer."
        )
    alpha = layer.output_scale()
    alpha = 1.0 if alpha is None else alpha.numpy()
    multiplier = magnitude * np.broadcast_to(alpha, magnitude.shape)  # scalar -> (C,)
    kernel = np.where(quantized >= 0, 1.0, -1.0)  # larq: sign(0) = +1
    return kernel.astype(np.float32), multiplier.astype(np.float32)


def _replacement_entries(layer: CBConv2D, entry: dict, existing: set):
    """Config entries (binary conv, scale) that replace a CBConv2D's entry."""
    conv_name = layer.name + _BINARY_SUFFIX
    while conv_name in existing:
        conv_name += "_"
    conv = lq.layers.QuantConv2D(
        layer.filters, layer.kernel_size, strides=layer.strides, padding=layer.padding,
        pad_values=layer.pad_values, input_quantizer=layer.input_quantizer,
        kernel_quantizer="ste_sign",
        kernel_constraint="weight_clip",  # irrelevant for export; silences larq's warning
        use_bias=False, name=conv_name,
    )
    scale = ChannelScale(use_bias=layer.use_bias, activation=layer.activation, name=layer.name)
    conv_entry = {**tf.keras.layers.serialize(conv), "name": conv_name}
    scale_entry = {**tf.keras.layers.serialize(scale), "name": layer.name}
    if "inbound_nodes" in entry:  # functional: node i of the scale reads node i of the conv
        conv_entry["inbound_nodes"] = entry["inbound_nodes"]
        scale_entry["inbound_nodes"] = [[[conv_name, i, 0, {}]]
                                        for i in range(len(entry["inbound_nodes"]))]
    return conv_entry, scale_entry


def _rewrite_config(model, config: dict) -> dict:
    layers = {layer.name: layer for layer in model.layers}
    existing = set(layers)
    entries = []
    for entry in config["layers"]:
        layer = layers.get(entry["config"].get("name"))
        if isinstance(layer, CBConv2D):
            entries.extend(_replacement_entries(layer, entry, existing))
        elif isinstance(layer, tf.keras.Model) and _has_cbconv(layer):
            entries.append({**entry, "config": _rewrite_config(layer, entry["config"])})
        else:
            entries.append(entry)
    return {**config, "layers": entries}


def _copy_weights(source, target) -> None:
    for layer in source.layers:
        if isinstance(layer, tf.keras.layers.InputLayer):
            continue
        if isinstance(layer, CBConv2D):
            scale = target.get_layer(layer.name)
            conv = scale.inbound_nodes[0].inbound_layers
            kernel, multiplier = _binary_kernel_and_scale(layer)
            conv.set_weights([kernel])
            scale.set_weights([multiplier] + ([layer.bias.numpy()] if layer.use_bias else []))
        elif isinstance(layer, tf.keras.Model):
            _copy_weights(layer, target.get_layer(layer.name))
        else:
            target.get_layer(layer.name).set_weights(layer.get_weights())


def _has_cbconv(model) -> bool:
    return any(isinstance(layer, CBConv2D) for layer in iter_layers(model))


def materialize_cbconv(model: tf.keras.Model) -> tf.keras.Model:
    """A copy of ``model`` in which every CBConv2D is a plain binary conv holding sign(E).

    CBConv2D ``name`` becomes ``QuantConv2D(name + "_binary", kernel=sign(E),
    kernel_quantizer="ste_sign", same input quantizer, TF-SAME padding with pad_values)``
    followed by ``ChannelScale(name)`` holding alpha as a rank-1 ``(C,)`` multiplier (and the
    bias / activation). Outputs are identical; other layers are copied with their weights.
    Returns ``model`` itself when it has no CBConv2D.

    Example:
        >>> x = tf.keras.Input((8, 8, 4))
        >>> model = tf.keras.Model(x, CBConv2D(2, 3, orientations=4, name="cb")(x))
        >>> [type(layer).__name__ for layer in materialize_cbconv(model).layers[1:]]
        ['QuantConv2D', 'ChannelScale']
    """
    if not _has_cbconv(model):
        return model
    graph_models = [model] + [m for m in model.submodules if isinstance(m, tf.keras.Model)]
    if not all(isinstance(m, tf.keras.Sequential) or getattr(m, "_is_graph_network", False)
               for m in graph_models):
        raise ExportError(
            f"{model.name} is a subclassed Keras model; exporting CBConv2D layers rewrites the "
            "model's config, which needs the functional or Sequential API. Rebuild it with "
            "tf.keras.Model(inputs, outputs) and copy the weights."
        )
    config = _rewrite_config(model, model.get_config())
    base = tf.keras.Sequential if isinstance(model, tf.keras.Sequential) else tf.keras.Model
    clone = base.from_config(config)
    _copy_weights(model, clone)
    return clone


# ------------------------------------------------------------------------------- op audit
def input_shapes(flatbuffer: bytes) -> list:
    """Shapes of the main subgraph's inputs, read from the flatbuffer without an interpreter."""
    graph = tflite_schema.Model.GetRootAsModel(flatbuffer, 0).Subgraphs(0)
    return [tuple(graph.Tensors(graph.Inputs(i)).ShapeAsNumpy())
            for i in range(graph.InputsLength())]


def audit_ops(flatbuffer: bytes) -> OpAudit:
    """Read the operators of a .tflite flatbuffer with the TFLite schema shipped with LCE.

    Example:
        >>> audit = audit_ops(open("/tmp/cbconv.tflite", "rb").read())
        >>> audit.counts["LceBconv2d"], audit.unsupported_ops
        (1, ())
    """
    model = tflite_schema.Model.GetRootAsModel(flatbuffer, 0)
    ops = []
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for o in range(graph.OperatorsLength()):
            op = graph.Operators(o)
            code = model.OperatorCodes(op.OpcodeIndex())
            # Builtin codes >= 127 live in BuiltinCode(); older ones in the deprecated field.
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            name = (code.CustomCode().decode() if builtin == tflite_schema.BuiltinOperator.CUSTOM
                    else _BUILTIN_NAMES.get(builtin, f"BUILTIN_{builtin}"))
            indices = [op.Inputs(i) for i in range(op.InputsLength())] + [
                op.Outputs(i) for i in range(op.OutputsLength())]
            tensors = tuple(graph.Tensors(i).Name().decode() for i in indices if i >= 0)
            ops.append((name, tensors))
    return OpAudit(tuple(ops))


def _float_binary_layers(model, audit: OpAudit) -> tuple:
    """Binary layers of ``model`` not matched to an ``LceBconv2d`` op, with the reason."""
    layers = [layer for layer in iter_layers(model) if is_binary_layer(layer)]
    not_conv = [f"{layer.name} ({type(layer).__name__}: LCE accelerates binary Conv2D only)"
                for layer in layers if not _is_binary_conv2d(layer)]
    convs = [layer for layer in layers if _is_binary_conv2d(layer)]
    if audit.bconv_count >= len(convs):
        return tuple(not_conv)
    exported_name = {layer.name: layer.name + _BINARY_SUFFIX if isinstance(layer, CBConv2D)
                     else layer.name for layer in convs}
    unmatched = [f"{layer.name} ({type(layer).__name__}: no LceBconv2d op found for it)"
                 for layer in convs
                 if not audit.ops_touching(exported_name[layer.name], "LceBconv2d")]
    if not unmatched:  # names did not tell which ones; report the count
        unmatched = [f"{len(convs) - audit.bconv_count} of {len(convs)} binary convolutions "
                     f"(the flatbuffer has {audit.bconv_count} LceBconv2d ops)"]
    return tuple(not_conv + unmatched)


def _check_audit(model, audit: OpAudit, strict: bool) -> tuple:
    if audit.unsupported_ops:
        found = ", ".join(f"{name} (tensor {tensors[-1]!r})" if tensors else name
                          for name, tensors in audit.unsupported_ops)
        raise ExportError(
            f"{model.name} converts to ops that neither TFLite nor LCE can run: {found}. "
            "Replace the layers producing them with TFLite builtin ops."
        )
    float_layers = _float_binary_layers(model, audit)
    if float_layers:
        message = (
            f"{model.name}: binary layers that would run in float (slow and 32x larger): "
            f"{'; '.join(float_layers)}. An LceBconv2d needs larq's sign as input quantizer "
            "directly before the conv (nothing in between), a +-1 kernel per channel and "
            "TF-SAME or VALID padding; binary Dense / depthwise layers are never accelerated."
        )
        if strict:
            raise ExportError(message + " Pass strict=False to export anyway.")
        warnings.warn(message, FloatFallbackWarning, stacklevel=3)
    return float_layers


# --------------------------------------------------------------------------------- parity
def random_inputs(shapes, samples: int, seed: int = 0) -> list:
    """Seeded standard-normal float32 inputs: one ``(samples, *shape[1:])`` array per input."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((samples, *shape[1:])).astype(np.float32) for shape in shapes]


def tflite_interpreter(flatbuffer: bytes, num_threads: int = 1) -> tf.lite.Interpreter:
    """``tf.lite.Interpreter`` (XNNPack for float ops) with tensors allocated."""
    with warnings.catch_warnings():  # its LiteRT migration notice; it still works in TF 2.21
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_content=flatbuffer, num_threads=num_threads)
    interpreter.allocate_tensors()
    return interpreter


def _run_lce(flatbuffer: bytes, inputs: list, num_threads: int) -> list:
    interpreter = lce.testing.Interpreter(flatbuffer, num_threads=num_threads)
    outputs = interpreter.predict(inputs if len(inputs) > 1 else inputs[0])
    return outputs if isinstance(outputs, list) else [outputs]


def _run_tflite(flatbuffer: bytes, inputs: list, num_threads: int) -> list:
    interpreter = tflite_interpreter(flatbuffer, num_threads)
    results = []
    for n in range(len(inputs[0])):
        for detail, array in zip(interpreter.get_input_details(), inputs):
            interpreter.set_tensor(detail["index"], array[n:n + 1])
        interpreter.invoke()
        results.append([interpreter.get_tensor(d["index"])
                        for d in interpreter.get_output_details()])
    return [np.concatenate(per_output) for per_output in zip(*results)]


def check_parity(model, flatbuffer: bytes, *, lce_runtime: bool = True, samples: int = 8,
                 seed: int = 0, rtol: float = 1e-3, atol: float = 1e-3,
                 num_threads: int = 1) -> Parity:
    """Compare ``model`` (Keras, inference mode) with ``flatbuffer`` run by an interpreter.

    ``lce_runtime`` selects LCE's interpreter (default kernels), else ``tf.lite.Interpreter``.
    Inputs are seeded standard-normal arrays of the flatbuffer's input shapes. Outputs are
    compared as they are (after any softmax: an interpreter exposes only the flatbuffer's
    outputs, not the logits inside), see :class:`Parity`.

    Example:
        >>> check_parity(model, open("/tmp/cbconv.tflite", "rb").read()).ok  # doctest: +SKIP
        True
    """
    inputs = random_inputs(input_shapes(flatbuffer), samples, seed)
    run = _run_lce if lce_runtime else _run_tflite
    converted = run(flatbuffer, inputs, num_threads)
    expected = model(inputs if len(inputs) > 1 else inputs[0], training=False)
    expected = [np.asarray(t) for t in tf.nest.flatten(expected)]
    if [e.shape for e in expected] != [c.shape for c in converted]:
        raise ExportError(f"Keras outputs {[e.shape for e in expected]} and converted outputs "
                         f"{[c.shape for c in converted]} do not line up.")
    scale = max(float(np.max(np.abs(e))) for e in expected)
    diffs = np.max([np.abs(e - c).reshape(samples, -1).max(axis=1)
                    for e, c in zip(expected, converted)], axis=0)
    return Parity(tuple(float(d) for d in diffs), scale, atol + rtol * scale)


def _check_parity(model, flatbuffer, lce_runtime, **kwargs) -> Parity:
    parity = check_parity(model, flatbuffer, lce_runtime=lce_runtime, **kwargs)
    if not parity.ok:
        raise ExportError(
            f"{model.name}: the converted model differs from Keras: only {parity}. A conversion "
            "error shows on most inputs. If the model is deep and untrained, float rounding "
            "can flip signs near zero on many inputs: check with trained weights."
        )
    if parity.mismatched:
        warnings.warn(
            f"{model.name}: {parity}. Isolated mismatches come from pre-sign activations within "
            "float rounding of zero (one flipped bit, amplified by the layers after it).",
            ParityWarning, stacklevel=3)
    return parity


# ---------------------------------------------------------------------------------- export
def _saved_model(model: tf.keras.Model, directory: str) -> None:
    """Save ``model``'s inference function (``training=False``) as a SavedModel signature.

    Only the function and the variables are saved, not Keras' per-layer traces, which makes
    this several times faster than ``model.save`` (what ``lce.convert_keras_model`` runs).
    """
    specs = [tf.TensorSpec(t.shape, t.dtype, name=t.name.split(":")[0]) for t in model.inputs]

    @tf.function(input_signature=specs)
    def serve(*inputs):
        return model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)

    module = tf.Module()
    module.model_variables = list(model.variables)  # tracked, so the function may capture them
    tf.saved_model.save(module, directory, signatures=serve)


def _convert(model: tf.keras.Model, convert, converter_name: str) -> bytes:
    try:
        with tempfile.TemporaryDirectory() as directory:
            _saved_model(model, directory)
            return convert(directory)
    except Exception as exc:
        raise ExportError(f"{converter_name} could not convert {model.name}: {exc}") from exc


def lce_flatbuffer(model: tf.keras.Model, *, target: str = "arm") -> bytes:
    """Convert ``model`` (CBConv2D materialised) with LCE, without checks or writing."""
    check_exportable(model)
    return _convert(materialize_cbconv(model),
                    lambda directory: lce.convert_saved_model(directory, target=target),
                    "larq_compute_engine")


def tflite_flatbuffer(model: tf.keras.Model) -> bytes:
    """Convert ``model`` with the plain TFLite converter (float32, builtin ops only)."""

    def convert(directory):
        converter = tf.lite.TFLiteConverter.from_saved_model(directory)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        return converter.convert()

    check_exportable(model)
    return _convert(model, convert, "TFLite")


def export_lce(model: tf.keras.Model, path, *, target: str = "arm", verify: bool = True,
               strict: bool = True, samples: int = 8, seed: int = 0, rtol: float = 1e-3,
               atol: float = 1e-3, num_threads: int = 1) -> ExportResult:
    """Write an LCE flatbuffer of ``model`` to ``path``; audit its ops and check parity first.

    Args:
        model: a built Keras 2 model with fixed input size (CBConv2D, larq layers, ...).
        path: destination .tflite; written atomically and only if every check passes.
        target: LCE converter target, "arm" (phones, Raspberry Pi) or "xcore".
        verify: run the LCE interpreter (default kernels) and Keras on ``samples`` seeded random
            inputs; a sample matches when ``max|diff| <= atol + rtol * max|keras|``. More than
            half the samples off raises ValueError, fewer warn (ParityWarning); see
            :class:`Parity`. The op audit always runs.
        strict: a binary layer left in float raises ValueError; False warns
            (FloatFallbackWarning) and exports anyway.

    Returns:
        ExportResult(path, bytes, ops, binary_layers, float_binary_layers, parity).

    Example:
        >>> result = export_lce(model, "model.tflite")  # doctest: +SKIP
        >>> result.ops["LceBconv2d"] == len(result.binary_layers)  # doctest: +SKIP
        True
    """
    flatbuffer = lce_flatbuffer(model, target=target)
    audit = audit_ops(flatbuffer)
    float_layers = _check_audit(model, audit, strict)
    parity = _check_parity(model, flatbuffer, True, samples=samples, seed=seed, rtol=rtol,
                           atol=atol, num_threads=num_threads) if verify else None
    files.write_bytes(path, flatbuffer)
    expected = tuple(layer.name for layer in iter_layers(model) if _is_binary_conv2d(layer))
    return ExportResult(os.fspath(path), len(flatbuffer), audit.counts, expected,
                        float_layers, parity)


def export_tflite(model: tf.keras.Model, path, *, verify: bool = True, samples: int = 8,
                  seed: int = 0, rtol: float = 1e-3, atol: float = 1e-3,
                  num_threads: int = 1) -> ExportResult:
    """Write a plain float32 TFLite flatbuffer (e.g. of the full-precision twin) to ``path``.

    Same checks as :func:`export_lce` with ``tf.lite.Interpreter`` instead of LCE's.

    Example:
        >>> twin = cbcn_tf.models.create_model("cbcn_resnet18", binary=False)  # doctest: +SKIP
        >>> export_tflite(twin, "twin.tflite").bytes  # doctest: +SKIP
    """
    flatbuffer = tflite_flatbuffer(model)
    audit = audit_ops(flatbuffer)
    if audit.unsupported_ops:
        raise ExportError(f"{model.name}: ops TFLite cannot run: {audit.unsupported_ops}")
    parity = _check_parity(model, flatbuffer, False, samples=samples, seed=seed, rtol=rtol,
                           atol=atol, num_threads=num_threads) if verify else None
    files.write_bytes(path, flatbuffer)
    return ExportResult(os.fspath(path), len(flatbuffer), audit.counts, parity=parity)


# ------------------------------------------------------------------------------------ size
@dataclasses.dataclass(frozen=True)
class SizeReport:
    """File sizes of the LCE model and its float twin next to the predicted ones (bytes).

    ``larq_predicted_bytes`` is larq's summary of the Keras model, which counts the learned W
    of a CBConv2D, not the deployed sign(E); ``cbcn_predicted_bytes`` counts deployed weights.
    """

    lce_bytes: int
    float_bytes: int
    learned_binary_weights: int
    deployed_binary_weights: int
    larq_predicted_bytes: float
    cbcn_predicted_bytes: float
    float_predicted_bytes: float

    @property
    def ratio(self) -> float:
        """LCE file size / float twin file size."""
        return self.lce_bytes / self.float_bytes


def size_report(model: tf.keras.Model, float_twin: tf.keras.Model) -> SizeReport:
    """Convert both models in memory and compare real and predicted sizes.

    Example:
        >>> from cbcn_tf.models import create_model  # doctest: +SKIP
        >>> report = size_report(create_model("cbcn_resnet18"),
        ...                      create_model("cbcn_resnet18", binary=False))  # doctest: +SKIP
        >>> report.ratio <= 1 / 8  # doctest: +SKIP
        True
    """
    totals = cbcn_summary(model, print_fn=None).totals
    return SizeReport(
        lce_bytes=len(lce_flatbuffer(model)),
        float_bytes=len(tflite_flatbuffer(float_twin)),
        learned_binary_weights=int(totals["learned_binary_weights"]),
        deployed_binary_weights=int(totals["deployed_binary_weights"]),
        larq_predicted_bytes=lq.models.ModelProfile(model).memory / 8,
        cbcn_predicted_bytes=float(totals["binary_model_bytes"]),
        float_predicted_bytes=lq.models.ModelProfile(float_twin).memory / 8,
    )
