"""cbcn_tf.rewrite: replacing layers of functional and Sequential models keeps the graph, the
weights and the outputs (checked against NumPy), and refuses what it cannot rebuild."""
import cbcn_tf  # noqa: F401  (Keras 2 before tensorflow)
import larq as lq
import numpy as np
import pytest
import tensorflow as tf

from cbcn_tf.errors import CbcnError, ExportError
from cbcn_tf.rewrite import (is_binary_layer, iter_layers, require_graph_model, rewrite)


@pytest.fixture(autouse=True)
def _seed():
    tf.keras.utils.set_random_seed(0)


def functional():
    """Two inputs, a Dense shared by both, a nested Sequential, two outputs."""
    a, b = tf.keras.Input((4,), name="a"), tf.keras.Input((4,), name="b")
    shared = tf.keras.layers.Dense(4, activation="tanh", name="shared")
    nested = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(3, name="inner")],
                                 name="nested")
    total = tf.keras.layers.Add(name="add")([shared(a), shared(b)])
    out = tf.keras.layers.Dense(2, name="head")(nested(total))
    return tf.keras.Model([a, b], [out, total], name="net")


def sequential():
    return tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(5, name="d1"),
                                tf.keras.layers.Dense(2, name="d2")], name="seq")


def inputs(model):
    rng = np.random.default_rng(1)
    shapes = [model.input_shape] if isinstance(model.input_shape, tuple) else model.input_shape
    return [rng.normal(size=(3, *shape[1:])).astype(np.float32) for shape in shapes]


def outputs(model, x):
    y = model(x if len(x) > 1 else x[0])
    return [t.numpy() for t in (y if isinstance(y, (list, tuple)) else [y])]


@pytest.mark.parametrize("build", [functional, sequential])
def test_rewrite_that_maps_nothing_is_an_equal_copy(build):
    model = build()
    copy = rewrite(model, lambda layer, calls: None)
    assert type(copy) is type(model) and copy.name == model.name
    assert [layer.name for layer in copy.layers] == [layer.name for layer in model.layers]
    assert not set(map(id, copy.layers)) & set(map(id, model.layers))  # new layer objects
    assert len(copy.weights) == len(model.weights) > 0
    for new, old in zip(copy.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(new, old)
    x = inputs(model)
    for new, old in zip(outputs(copy, x), outputs(model, x)):
        np.testing.assert_array_equal(new, old)


@pytest.mark.parametrize("build,name", [(functional, "head"), (sequential, "d2")])
def test_replaced_layer_gets_the_old_weights_and_consumers_read_the_chain(build, name):
    """Dense -> [Dense (same weights, relu), a x2 scaling layer]: the model's outputs become
    2 * relu(x W + b) of the old layer's input."""
    model = build()
    old = model.get_layer(name)

    def replace(layer, calls):
        if layer.name != name:
            return None
        return [tf.keras.layers.Dense(layer.units, activation="relu", name=name),
                tf.keras.layers.Rescaling(2.0, name=f"{name}_double")]

    new = rewrite(model, replace)
    kernel, bias = old.get_weights()
    np.testing.assert_array_equal(new.get_layer(name).kernel.numpy(), kernel)
    feed = tf.keras.Model(model.inputs, old.input)
    x = inputs(model)
    features = outputs(feed, x)[0]
    expected = 2.0 * np.maximum(features @ kernel + bias, 0.0)
    np.testing.assert_allclose(outputs(new, x)[0], expected, rtol=1e-5, atol=1e-6)
    assert new.layers[-1].name == f"{name}_double"


def test_shared_layer_is_replaced_in_every_call_and_sees_both_calls():
    model = functional()
    seen = {}

    def replace(layer, calls):
        seen[layer.name] = calls
        if layer.name == "shared":
            return tf.keras.layers.Dense(4, activation="relu", name="shared")
        return None

    new = rewrite(model, replace)
    assert seen["shared"] == [["a"], ["b"]] and seen["add"] == [["shared", "shared"]]
    kernel, bias = model.get_layer("shared").get_weights()
    x = inputs(model)
    total = sum(np.maximum(v @ kernel + bias, 0.0) for v in x)
    np.testing.assert_allclose(outputs(new, x)[1], total, rtol=1e-5, atol=1e-6)


def test_carry_gets_the_rebuilt_layers_in_order_and_new_names_stay_unique():
    model = sequential()
    received = []

    def replace(layer, calls):
        if layer.name == "d1":  # "d2" is taken by the next layer: the new one gets "d2_"
            return [tf.keras.layers.Dense(5, name="d2"), tf.keras.layers.ReLU(name="d1")]
        return None

    def carry(old, new_layers):
        received.append((old.name, [layer.name for layer in new_layers]))
        new_layers[0].set_weights([-w for w in old.get_weights()])

    new = rewrite(model, replace, carry)
    assert received == [("d1", ["d2_", "d1"])]
    assert [layer.name for layer in new.layers] == ["d2_", "d1", "d2"]
    kernel, bias = model.get_layer("d1").get_weights()
    k2, b2 = model.get_layer("d2").get_weights()
    x = inputs(model)[0]
    expected = np.maximum(-(x @ kernel + bias), 0.0) @ k2 + b2
    np.testing.assert_allclose(outputs(new, [x])[0], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("nested", [False, True])
def test_nested_models_are_rewritten_only_when_asked(nested):
    model = functional()

    def replace(layer, calls):
        if layer.name == "inner":
            return tf.keras.layers.Dense(3, activation="relu", name="inner")
        return None

    new = rewrite(model, replace, nested=nested)
    inner = new.get_layer("nested").get_layer("inner")
    assert inner.activation is (tf.keras.activations.relu if nested
                                else tf.keras.activations.linear)
    np.testing.assert_array_equal(
        inner.kernel.numpy(), model.get_layer("nested").get_layer("inner").kernel.numpy())


def test_unbuilt_and_subclassed_models_are_one_line_errors():
    class Subclassed(tf.keras.Model):
        def __init__(self):
            super().__init__(name="custom")
            self.dense = tf.keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    subclassed = Subclassed()
    subclassed(tf.zeros((1, 4)))
    unbuilt = tf.keras.Sequential([tf.keras.layers.Dense(2)], name="lazy")
    for model, what in ((subclassed, "subclassed"), (unbuilt, "not built")):
        with pytest.raises(CbcnError, match="functional or Sequential") as info:
            rewrite(model, lambda layer, calls: None)
        message = str(info.value)
        assert "\n" not in message and model.name in message and what in message
    wrapper = tf.keras.Sequential([tf.keras.Input((4,)), subclassed])
    require_graph_model(wrapper, "export")  # only the outer model by default
    with pytest.raises(ExportError, match="'custom'"):
        require_graph_model(wrapper, "export", ExportError, nested=True)


def test_iter_layers_and_is_binary_layer():
    binary = lq.layers.QuantConv2D(2, 3, input_quantizer="ste_sign",
                                   kernel_quantizer="ste_sign", name="binary")
    half = lq.layers.QuantConv2D(2, 3, kernel_quantizer="ste_sign", name="half")
    nested = tf.keras.Sequential([tf.keras.Input((6, 6, 2)), binary], name="nested")
    model = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), half, nested])
    assert [layer.name for layer in iter_layers(model)] == ["half", "binary"]
    assert [is_binary_layer(layer) for layer in iter_layers(model)] == [False, True]
    assert not is_binary_layer(tf.keras.layers.Dense(2))
