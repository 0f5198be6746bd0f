"""``cbcnify``: give the binary convs of an existing Keras model circulant filters (CBConv2D)."""
from __future__ import annotations

import larq as lq
import tensorflow as tf

from cbcn_tf import cif
from cbcn_tf.invariance import make_invariant
from cbcn_tf.layers import CBConv2D
from cbcn_tf.rewrite import is_binary_layer, require_graph_model, rewrite


def cbcnify(model: tf.keras.Model, orientations: int = 4, strict: bool = True,
            invariant=False) -> tf.keras.Model:
    """Rebuild ``model`` with every binary ``QuantConv2D`` replaced by a ``CBConv2D``.

    A conv is binary when both its input and kernel quantizers have ``precision == 1``; layers
    that already are ``CBConv2D`` stay as they are. The replacement keeps the FEATURE widths:
    it learns ``filters / K`` maps and outputs ``filters`` channels, so binary MACs are
    unchanged (the paper's comparison). It carries over kernel_size, strides, padding,
    pad_values, use_bias, the constraints / regularisers and the quantizers, except that
    "magnitude_aware_sign" becomes "ste_sign" (the gradient it uses) with
    ``scale="channel_mean"`` (the same per-output-channel mean, computed by CBConv2D); other
    kernel quantizers carry no scale, so they get ``scale=None``.
    Converted convs start from CBConv2D's initialisation (their learned kernel has another
    shape); every other layer keeps its weights. The result is not compiled.

    Args:
        model: a built functional or Sequential Keras model.
        orientations: K in {1, 2, 4, 8}.
        strict: raise one ValueError listing every binary conv that cannot be converted
            (channels not divisible by K, grouped or dilated, non-channels_last, even or
            non-square kernels, K = 8 with a kernel other than 1x1 / 3x3, or inside a nested
            model); with False those layers are left as they are.
        invariant: True (or a dict of ``cbcn_tf.invariance.Invariance`` switches) then makes
            the converted model invariant to quarter turns (``make_invariant``,
            docs/METHOD.md §12); needs a fixed input size.

    Example:
        >>> import cbcn_tf
        >>> from cbcn_tf.models import cbcnify, create_model
        >>> xnor = create_model("xnor_resnet18_doubled", kernel_stage=(4, 4, 8, 8))
        >>> cbcn = cbcnify(xnor, orientations=4)
        >>> sum(isinstance(layer, cbcn_tf.CBConv2D) for layer in cbcn.layers)
        16
    """
    cif.check_orientations(orientations, 1)
    require_graph_model(model, "cbcnify")
    convertible, problems = set(), []
    for layer in model.layers:
        if _is_binary_conv(layer):
            reasons = _unconvertible_reasons(layer, orientations)
            if reasons:
                problems.append(f"{layer.name}: {'; '.join(reasons)}")
            else:
                convertible.add(layer.name)
        elif isinstance(layer, tf.keras.Model):
            nested = [sub.name for sub in layer.submodules if _is_binary_conv(sub)]
            if nested:
                problems.append(f"{layer.name}: nested model holding binary convs "
                                f"{', '.join(nested)} (only top-level layers are converted)")
    if problems and strict:
        raise ValueError(
            f"cbcnify(orientations={orientations}) cannot convert {len(problems)} binary conv "
            "layer(s):\n  " + "\n  ".join(problems) + "\nPass strict=False to leave them as "
            "they are.")

    def replace(layer, calls):
        return _to_cbconv(layer, orientations) if layer.name in convertible else None

    # Converted convs start from CBConv2D's initialisation: W is not the old kernel.
    new_model = rewrite(model, replace, carry=lambda old, new_layers: None)
    if invariant:
        new_model = make_invariant(new_model, orientations, invariant, strict=strict)
    return new_model


def _is_binary_conv(layer) -> bool:
    return (isinstance(layer, lq.layers.QuantConv2D) and not isinstance(layer, CBConv2D)
            and is_binary_layer(layer))


def _unconvertible_reasons(layer, orientations: int) -> list:
    reasons = []
    input_channels = layer.kernel.shape[-2] * layer.groups
    if layer.filters % orientations or input_channels % orientations:
        reasons.append(f"{input_channels} input / {layer.filters} output channels are not "
                       f"multiples of K={orientations}")
    if layer.groups != 1:
        reasons.append(f"grouped conv (groups={layer.groups})")
    if tuple(layer.dilation_rate) != (1, 1):
        reasons.append(f"dilated conv (dilation_rate={tuple(layer.dilation_rate)})")
    if layer.data_format != "channels_last":
        reasons.append(f"data_format={layer.data_format!r}")
    try:
        cif.check_orientations(orientations, tuple(layer.kernel_size))
    except ValueError as exc:
        reasons.append(str(exc))
    return reasons


def _to_cbconv(layer, orientations: int) -> CBConv2D:
    config = layer.get_config()
    del config["kernel_initializer"]  # W has another shape; use CBConv2D's released-code init
    kernel_quantizer = layer.kernel_quantizer
    if isinstance(kernel_quantizer, lq.quantizers.MagnitudeAwareSign):
        config.update(kernel_quantizer=lq.quantizers.SteSign(kernel_quantizer.clip_value),
                      scale="channel_mean")
    else:
        config["scale"] = None
    config.update(filters=layer.filters // orientations, orientations=orientations)
    return CBConv2D.from_config(config)
