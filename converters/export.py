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
    >>> import os, tempfile
    >>> import cbcn_tf, tensorflow as tf
    >>> from cbcn_tf.converters import export_lce
    >>> x = tf.keras.Input((16, 16, 8))
    >>> y = cbcn_tf.CBConv2D(8, 3, orientations=4)(x)
    >>> path = os.path.join(tempfile.mkdtemp(), "cbconv.tflite")
    >>> result = export_lce(tf.keras.Model(x, y), path)
    >>> result.ops["LceBconv2d"], result.parity.ok
    (1, True)
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
import warnings

import larq as lq
import larq_compute_engine as lce
import tensorflow as tf

from cbcn_tf import files
from cbcn_tf import summary as cbcn_summary
from cbcn_tf.converters.flatbuffer import OpAudit, audit_ops
from cbcn_tf.converters.materialize import BINARY_SUFFIX, is_binary_conv2d, materialize_cbconv
from cbcn_tf.converters.parity import Parity, ParityWarning, check_parity
from cbcn_tf.errors import ExportError
from cbcn_tf.layers import CBConv2D
from cbcn_tf.rewrite import is_binary_layer, iter_layers


class FloatFallbackWarning(UserWarning):
    """A binary layer was exported as a float op (``strict=False``)."""


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


def _float_binary_layers(model, audit: OpAudit) -> tuple:
    """Binary layers of ``model`` not matched to an ``LceBconv2d`` op, with the reason."""
    layers = [layer for layer in iter_layers(model) if is_binary_layer(layer)]
    not_conv = [f"{layer.name} ({type(layer).__name__}: LCE accelerates binary Conv2D only)"
                for layer in layers if not is_binary_conv2d(layer)]
    convs = [layer for layer in layers if is_binary_conv2d(layer)]
    if audit.bconv_count >= len(convs):
        return tuple(not_conv)
    exported_name = {layer.name: layer.name + BINARY_SUFFIX if isinstance(layer, CBConv2D)
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
        >>> import os, tempfile
        >>> from cbcn_tf.models import create_model
        >>> model = create_model("cbcn_lenet", input_shape=(16, 16, 1), orientations=2)
        >>> result = export_lce(model, os.path.join(tempfile.mkdtemp(), "model.tflite"))
        >>> result.ops["LceBconv2d"] == len(result.binary_layers), result.parity.ok
        (True, True)
    """
    flatbuffer = lce_flatbuffer(model, target=target)
    audit = audit_ops(flatbuffer)
    float_layers = _check_audit(model, audit, strict)
    parity = _check_parity(model, flatbuffer, True, samples=samples, seed=seed, rtol=rtol,
                           atol=atol, num_threads=num_threads) if verify else None
    files.write_bytes(path, flatbuffer)
    expected = tuple(layer.name for layer in iter_layers(model) if is_binary_conv2d(layer))
    return ExportResult(os.fspath(path), len(flatbuffer), audit.counts, expected,
                        float_layers, parity)


def export_tflite(model: tf.keras.Model, path, *, verify: bool = True, samples: int = 8,
                  seed: int = 0, rtol: float = 1e-3, atol: float = 1e-3,
                  num_threads: int = 1) -> ExportResult:
    """Write a plain float32 TFLite flatbuffer (e.g. of the full-precision twin) to ``path``.

    Same checks as :func:`export_lce` with ``tf.lite.Interpreter`` instead of LCE's.

    Example:
        >>> import os, tempfile
        >>> from cbcn_tf.models import create_model
        >>> twin = create_model("cbcn_lenet", input_shape=(16, 16, 1), binary=False)
        >>> result = export_tflite(twin, os.path.join(tempfile.mkdtemp(), "twin.tflite"))
        >>> result.bytes == os.path.getsize(result.path), result.parity.ok
        (True, True)
    """
    flatbuffer = tflite_flatbuffer(model)
    audit = audit_ops(flatbuffer)
    if audit.unsupported_ops:
        raise ExportError(f"{model.name}: ops TFLite cannot run: {audit.unsupported_ops}")
    parity = _check_parity(model, flatbuffer, False, samples=samples, seed=seed, rtol=rtol,
                           atol=atol, num_threads=num_threads) if verify else None
    files.write_bytes(path, flatbuffer)
    return ExportResult(os.fspath(path), len(flatbuffer), audit.counts, parity=parity)


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
        >>> from cbcn_tf.models import create_model
        >>> report = size_report(create_model("cbcn_lenet"),
        ...                      create_model("cbcn_lenet", binary=False))
        >>> report.ratio <= 1 / 8
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
