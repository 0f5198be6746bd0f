"""Model costs against independent counts: each zoo docstring's five figures (parameters,
BOPs, FLOPs, and the binary=False twin's parameters and FLOPs) against counts from the layer
shapes, and the LeNet's against a hand count of its layout, for every K."""
import cbcn_tf  # Keras 2 before tensorflow
import numpy as np
import pytest
import tensorflow as tf

from cbcn_tf.models import create_model, list_models, registry


def is_binary(layer):
    return all(getattr(getattr(layer, attr, None), "precision", None) == 1
               for attr in ("input_quantizer", "kernel_quantizer"))


def lenet_cost_by_hand(k, stage=(5, 10, 20, 40), side=28, classes=10):
    """Cost of ``cbcn_lenet(orientations=k, kernel_stage=stage)`` counted from its documented
    layout, as ``Cost`` (params, BOPs, FLOPs, twin params, twin FLOPs).

    Feature widths are stage x K. A float 3x3 stem conv (1 input channel, no bias) runs on the
    side x side map, then BN; each binary 3x3 conv (no bias) sees BN(x) and runs after a 2x2
    'same' max-pool (28 -> 14 -> 7 -> 4); a BN holds 4 numbers per channel (gamma, beta,
    moving mean / variance); the dense head has a bias. A CBConv2D stores W, 1/K of the
    expanded kernel E (3 x 3 x C_in x C_out), and multiplies with E at every output pixel.
    """
    widths = [s * k for s in stage]
    sides = [side]
    for _ in stage[1:]:
        sides.append(-(-sides[-1] // 2))
    pairs = list(zip(widths, widths[1:]))
    stem = 9 * 1 * widths[0]
    batch_norms = 4 * (widths[0] + sum(widths[:-1]))
    dense = widths[-1] * classes + classes
    expanded = sum(9 * c_in * c_out for c_in, c_out in pairs)
    learned = expanded // k
    bops = sum(9 * c_in * c_out * s * s for (c_in, c_out), s in zip(pairs, sides[1:]))
    flops = stem * side * side + widths[-1] * classes
    rest = stem + batch_norms + dense
    return registry.Cost(rest + learned, bops, flops, rest + expanded, bops + flops)


@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_cbcn_lenet_widths_kernels_and_parameters_follow_k(k):
    """K = 8 included (3x3 kernels only): each CBConv2D outputs K x its learned maps, stores
    W of shape (3, 3, C_in / K, K, C_out / K) and convolves with E of shape
    (3, 3, C_in, C_out); the parameter count is the hand count's."""
    stage = (5, 10, 20, 40)
    model = create_model("cbcn_lenet", orientations=k)
    assert model.output_shape == (None, 10)
    convs = [layer for layer in model.layers if isinstance(layer, cbcn_tf.CBConv2D)]
    widths = [s * k for s in stage]
    assert [layer.input_shape[-1] for layer in convs] == widths[:-1]
    assert [layer.output_shape[-1] for layer in convs] == widths[1:]
    for layer, c_in, c_out in zip(convs, widths, widths[1:]):
        assert (layer.orientations, layer.learned_filters) == (k, c_out // k)
        assert tuple(layer.kernel.shape) == (3, 3, c_in // k, k, c_out // k)
        assert tuple(layer.expanded_kernel().shape) == (3, 3, c_in, c_out)
    assert model.count_params() == lenet_cost_by_hand(k).params


def _all_layers(model):
    for layer in model.layers:
        yield from _all_layers(layer) if isinstance(layer, tf.keras.Model) else (layer,)


def cost_from_shapes(model):
    """(parameters, binary MACs, float MACs) of a built model from its variables' and layers'
    shapes, without cbcn_tf.summary: a conv multiplies kh x kw x C_in / groups inputs per
    output entry (C_in, C_out and the output map read off its input / output shapes, so a
    CBConv2D counts its expanded kernel), a Dense C_in per output; binary when its input
    and kernel quantizers are both 1-bit."""
    binary = floats = 0
    for layer in _all_layers(model):
        if isinstance(layer, tf.keras.layers.Conv2D):  # QuantConv2D / CBConv2D too
            kh, kw = layer.kernel_size
            macs = kh * kw * layer.input_shape[-1] // layer.groups * int(
                np.prod(layer.output_shape[1:]))
        elif isinstance(layer, tf.keras.layers.Dense):
            macs = layer.input_shape[-1] * layer.output_shape[-1]
        else:  # a new layer kind with a kernel needs its own count here
            assert isinstance(layer, (tf.keras.layers.BatchNormalization,
                                      tf.keras.layers.PReLU)) or not layer.weights, layer
            continue
        if is_binary(layer):
            binary += macs
        else:
            floats += macs
    params = sum(int(np.prod(w.shape)) for w in model.weights)
    return params, binary, floats


def docstring_cost(name):
    """The five numbers of the cost paragraph in the docstring of model ``name``."""
    import re

    import cbcn_tf.models as zoo

    doc = " ".join(getattr(zoo, name).__doc__.split())
    found = re.search(r"([\d,]+) parameters, ([\d,]+) BOPs \(binary MACs\), ([\d,]+) FLOPs "
                      r"\(float MACs\); the binary=False twin: ([\d,]+) parameters, "
                      r"([\d,]+) FLOPs\.", doc)
    assert found, f"{name}: no cost paragraph in its docstring"
    return registry.Cost(*(int(group.replace(",", "")) for group in found.groups()))


# cbcn_resnet18_imagenet at its defaults (224x224, 48.9 M parameters, a 180.7 M twin) takes
# tens of seconds to build.
@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow)
                                  if name == "cbcn_resnet18_imagenet" else name
                                  for name in list_models()])
def test_docstring_costs_match_counts_from_the_layer_shapes(name):
    """All five figures of each model's docstring (at its defaults): the parameters, BOPs
    and FLOPs of the model and the parameters and FLOPs of its binary=False twin, against
    counts from the variables' and layers' shapes; cbcn_tf.summary gives the same."""
    stated = docstring_cost(name)
    model = create_model(name)
    params, bops, flops = cost_from_shapes(model)
    assert (stated.params, stated.bops, stated.flops) == (params, bops, flops)
    totals = cbcn_tf.summary(model, print_fn=None).totals
    assert (totals["binary_macs"], totals["float_macs"]) == (bops, flops)
    assert totals["learned_binary_weights"] + totals["float_params"] == params
    del model
    twin_params, twin_bops, twin_flops = cost_from_shapes(create_model(name, binary=False))
    assert twin_bops == 0
    assert (stated.twin_params, stated.twin_flops) == (twin_params, twin_flops)


def test_lenet_docstring_costs_match_the_hand_count():
    """The LeNets' figures from the layout alone (an anchor for the shape count above): the
    XNOR LeNet is the twin's layout with binary convs."""
    by_hand = lenet_cost_by_hand(4)
    assert docstring_cost("cbcn_lenet") == by_hand
    assert docstring_cost("xnor_lenet") == registry.Cost(
        by_hand.twin_params, by_hand.bops, by_hand.flops, by_hand.twin_params,
        by_hand.twin_flops)
    assert cost_from_shapes(create_model("cbcn_lenet")) == (by_hand.params, by_hand.bops,
                                                           by_hand.flops)
