"""Model zoo tests, generated from the registry: a newly registered model is covered as is."""
import collections
import functools
import json

import cbcn_tf  # Keras 2 before tensorflow
import larq as lq
import numpy as np
import pytest
import tensorflow as tf

from cbcn_tf.models import registry
from cbcn_tf.models import (cbcnify, create_model, list_models, load_weights,
                            model_min_input_size, register_model)

MODELS = list_models()
XNOR_MODELS = [name for name in MODELS if name.startswith("xnor_")]
BINARY = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign", padding="same")

NUM_CLASSES = 7  # not any model's default, so the tests see that num_classes is honoured
# Small settings keep the file fast; every other model runs at its defaults with K = 2.
SMALL = {
    "cbcn_resnet18_imagenet": dict(input_shape=(64, 64, 3), kernel_stage=(4, 8, 8, 16)),
}


def small_kwargs(name):
    return {"orientations": 2, "num_classes": NUM_CLASSES, **SMALL.get(name, {})}


@functools.lru_cache(maxsize=None)
def small_model(name):
    """Built once per name; tests must not train it (the gradient test only runs BN updates)."""
    return create_model(name, **small_kwargs(name))


def random_batch(model, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(batch, *model.input_shape[1:])).astype("float32")
    labels = rng.integers(0, model.output_shape[-1], size=batch)
    return images, labels


def is_binary(layer):
    return all(getattr(getattr(layer, attr, None), "precision", None) == 1
               for attr in ("input_quantizer", "kernel_quantizer"))


def binary_macs(model):
    return cbcn_tf.summary(model, print_fn=None).totals["binary_macs"]


def count_types(model):
    return collections.Counter(type(layer).__name__ for layer in model.layers)


@pytest.mark.parametrize("name", MODELS)
def test_output_is_a_softmax_over_num_classes(name):
    model = small_model(name)
    images, _ = random_batch(model)
    outputs = model(images, training=False).numpy()
    assert outputs.shape == (2, NUM_CLASSES)
    assert outputs.dtype == np.float32
    np.testing.assert_allclose(outputs.sum(axis=-1), 1.0, rtol=1e-5)
    assert any(is_binary(layer) for layer in model.layers)


@pytest.mark.parametrize("name", MODELS)
def test_every_trainable_weight_gets_a_gradient(name):
    model = small_model(name)
    images, labels = random_batch(model, batch=4)
    with tf.GradientTape() as tape:
        loss = tf.keras.losses.sparse_categorical_crossentropy(
            labels, model(images, training=True))
    grads = tape.gradient(loss, model.trainable_weights)
    dead = [w.name for w, g in zip(model.trainable_weights, grads)
            if g is None or not np.any(tf.convert_to_tensor(g).numpy())]
    assert not dead, f"no gradient reaches {dead}"


@pytest.mark.parametrize("name", MODELS)
def test_config_round_trip_gives_identical_outputs(name):
    model = small_model(name)
    config = json.loads(model.to_json())["config"]  # get_config, through JSON as when saved
    clone = tf.keras.Model.from_config(config)
    clone.set_weights(model.get_weights())
    images, _ = random_batch(model)
    assert [type(layer) for layer in clone.layers] == [type(layer) for layer in model.layers]
    np.testing.assert_array_equal(clone(images).numpy(), model(images).numpy())


@pytest.mark.parametrize("name", MODELS)
def test_larq_summary_counts_the_models_1_bit_and_32_bit_weights(name):
    """Larq's table totals equal the counts read off the model's own variables: the latent
    kernels of layers whose kernel quantizer is 1-bit, and every other parameter."""
    from cbcn_tf.rewrite import iter_layers

    model = small_model(name)
    binary = sum(
        int(np.prod(layer.kernel.shape)) for layer in iter_layers(model)
        if getattr(getattr(layer, "kernel_quantizer", None), "precision", None) == 1)
    assert binary > 0
    # Every other parameter is 32-bit; a BatchNorm deploys as one scale and one offset per
    # channel, so larq counts gamma / beta together with the moving variance / mean.
    folded = sum(int(np.prod(w.shape)) for layer in iter_layers(model)
                 if isinstance(layer, tf.keras.layers.BatchNormalization)
                 for w in (layer.gamma, layer.beta) if w is not None)
    floats = model.count_params() - binary - folded
    # The table lq.models.summary prints: a header, one row per layer, the total row last.
    header, *_, total = lq.models.ModelProfile(model).generate_table()
    total = dict(zip(header, total))
    assert (total["# 1-bit\nx 1"], total["# 32-bit\nx 1"]) == (binary, floats)


@pytest.mark.parametrize("name", MODELS)
def test_float_twin_has_the_same_topology_without_binary_layers(name):
    model = small_model(name)
    twin = create_model(name, binary=False, **small_kwargs(name))

    def kind(layer):  # CBConv2D and QuantConv2D subclass Conv2D: all are "a conv" here
        return "conv" if isinstance(layer, tf.keras.layers.Conv2D) else type(layer).__name__

    assert collections.Counter(map(kind, twin.layers)) == collections.Counter(
        map(kind, model.layers))
    assert [layer.output_shape for layer in twin.layers] == [
        layer.output_shape for layer in model.layers]  # same feature widths everywhere
    assert not [layer.name for layer in twin.layers if is_binary(layer)]
    assert not [layer.name for layer in twin.layers
                if isinstance(layer, lq.layers.QuantConv2D)]
    totals, twin_totals = (cbcn_tf.summary(m, print_fn=None).totals for m in (model, twin))
    assert twin_totals["binary_macs"] == 0
    assert twin_totals["float_macs"] == totals["binary_macs"] + totals["float_macs"]


@pytest.mark.parametrize("kernel_stage", [(16, 16, 32, 64), (32, 32, 64, 128)])
def test_cifar_cbcn_k4_has_16_times_the_binary_macs_of_k1(kernel_stage):
    k4, k1 = (create_model("cbcn_resnet18", kernel_stage=kernel_stage, orientations=k)
              for k in (4, 1))
    assert binary_macs(k4) == 16 * binary_macs(k1) > 0


@pytest.mark.parametrize("name", MODELS)
def test_weights_round_trip(name, tmp_path):
    model = small_model(name)
    path = str(tmp_path / "weights.h5")
    model.save_weights(path)
    loaded = create_model(name, weights=path, **small_kwargs(name))
    fresh = create_model(name, **small_kwargs(name))
    images, _ = random_batch(model)
    np.testing.assert_array_equal(loaded(images).numpy(), model(images).numpy())
    assert not np.allclose(fresh(images).numpy(), model(images).numpy())  # loading mattered


@pytest.mark.parametrize("suffix", [".h5", ".ckpt"])  # HDF5 and TF checkpoint formats
@pytest.mark.parametrize("other", [dict(orientations=1), dict(kernel_stage=(5, 10, 20, 80))])
def test_weights_of_another_architecture_raise(suffix, other, tmp_path):
    path = str(tmp_path / f"lenet{suffix}")
    create_model("cbcn_lenet", orientations=2).save_weights(path)
    with pytest.raises(ValueError, match=f"{path}.*does not match the model"):
        create_model("cbcn_lenet", weights=path, **{"orientations": 2, **other})
    with pytest.raises(ValueError, match="does not match"):
        create_model("xnor_resnet18", weights=path, kernel_stage=(2, 2, 2, 2))
    with pytest.raises(FileNotFoundError, match="missing"):
        create_model("cbcn_lenet", weights=str(tmp_path / "missing.h5"))


@pytest.mark.parametrize("suffix", [".h5", ".ckpt"])
def test_load_weights_rejects_a_file_that_fills_only_part_of_the_model(suffix, tmp_path):
    def dense_stack(depth):
        inputs = tf.keras.Input((3,))
        outputs = inputs
        for _ in range(depth):
            outputs = tf.keras.layers.Dense(4)(outputs)
        return tf.keras.Model(inputs, outputs, name=f"dense{depth}")

    path = str(tmp_path / f"one_layer{suffix}")
    dense_stack(1).save_weights(path)
    with pytest.raises(ValueError, match="does not match the model 'dense2'"):
        load_weights(dense_stack(2), path)  # plain Keras restores the first layer silently


@pytest.mark.parametrize("name", MODELS)
def test_quantizer_choice_reaches_every_binary_conv(name):
    model = create_model(name, input_quantizer="swish_sign", kernel_quantizer="approx_sign",
                         **small_kwargs(name))
    binary = [layer for layer in model.layers if is_binary(layer)]
    assert binary
    assert {type(layer.input_quantizer) for layer in binary} == {lq.quantizers.SwishSign}
    assert {type(layer.kernel_quantizer) for layer in binary} == {lq.quantizers.ApproxSign}


@pytest.mark.slow  # 15 eager training steps of a ResNet18 per model
@pytest.mark.parametrize("name", XNOR_MODELS)
def test_cbcnify_keeps_widths_binary_macs_and_trains(name):
    settings = dict(input_shape=(16, 16, 3), kernel_stage=(4, 4, 8, 8), orientations=4)
    tf.keras.utils.set_random_seed(0)  # the same weights whatever ran before
    xnor = create_model(name, **settings)
    cbcn = cbcnify(xnor, orientations=4)

    assert cbcn.output_shape == xnor.output_shape
    assert binary_macs(cbcn) == binary_macs(xnor) > 0
    quant_convs = count_types(xnor)["QuantConv2D"]
    published = {"xnor_lenet": 3}  # LeNet: three binary convs; the ResNet18s: 16
    assert quant_convs == published.get(name, 16) and count_types(cbcn)["CBConv2D"] == quant_convs
    assert count_types(cbcn)["QuantConv2D"] == 0
    np.testing.assert_array_equal(cbcn.get_layer("stem_conv").get_weights()[0],
                                  xnor.get_layer("stem_conv").get_weights()[0])
    if name == "xnor_resnet18_doubled":  # the Bi-Real baseline becomes exactly the CBCN
        reference = create_model("cbcn_resnet18", **settings)
        assert [layer.output_shape for layer in cbcn.layers] == [
            layer.output_shape for layer in reference.layers]

    tf.keras.utils.set_random_seed(0)
    images, labels = random_batch(cbcn, batch=8)
    # Eager: tracing this graph takes longer than the few steps it would speed up.
    cbcn.compile(tf.keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy",
                 run_eagerly=True)
    # Dropout makes single steps noisy: compare the first and the last five steps.
    losses = [cbcn.train_on_batch(images, labels) for _ in range(15)]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]), losses


def _layers_for_strict_test():
    inputs = tf.keras.Input((8, 8, 8))
    nested = tf.keras.Sequential([tf.keras.Input((8, 8, 8)),
                                  lq.layers.QuantConv2D(8, 3, name="inner", **BINARY)],
                                 name="nested")
    branches = [
        nested,
        lq.layers.QuantConv2D(8, 3, name="fine", **BINARY),
        lq.layers.QuantConv2D(6, 3, name="six_filters", **BINARY),
        lq.layers.QuantConv2D(8, 3, dilation_rate=2, name="dilated", **BINARY),
        lq.layers.QuantConv2D(8, 3, groups=2, name="grouped", **BINARY),
        lq.layers.QuantConv2D(8, 2, name="even_kernel", **BINARY),
        lq.layers.QuantConv2D(8, 3, kernel_quantizer="ste_sign", padding="same",
                              name="float_input"),  # not binary: never touched
    ]
    outputs = tf.keras.layers.Concatenate()([branch(inputs) for branch in branches])
    return tf.keras.Model(inputs, outputs)


def test_cbcnify_strict_lists_every_offending_layer():
    model = _layers_for_strict_test()
    with pytest.raises(ValueError) as info:
        cbcnify(model, orientations=4)
    message = str(info.value)
    for offender in ("six_filters", "dilated", "grouped", "even_kernel", "nested"):
        assert offender in message
    assert "fine" not in message and "float_input" not in message
    assert "strict=False" in message


def test_cbcnify_non_strict_skips_what_it_cannot_convert():
    model = _layers_for_strict_test()
    converted = cbcnify(model, orientations=4, strict=False)
    assert isinstance(converted.get_layer("fine"), cbcn_tf.CBConv2D)
    assert converted.get_layer("fine").scale is None  # ste_sign carries no scale to keep
    assert type(converted.get_layer("nested").get_layer("inner")) is lq.layers.QuantConv2D
    for name in ("nested", "six_filters", "dilated", "grouped", "even_kernel", "float_input"):
        layer = converted.get_layer(name)
        assert not isinstance(layer, cbcn_tf.CBConv2D)
        for new, old in zip(layer.get_weights(), model.get_layer(name).get_weights()):
            np.testing.assert_array_equal(new, old)
    assert converted.output_shape == model.output_shape


def test_cbcnify_converts_sequential_models():
    model = tf.keras.Sequential([
        tf.keras.Input((8, 8, 3)),
        tf.keras.layers.Conv2D(8, 3, padding="same", name="float_stem"),
        lq.layers.QuantConv2D(8, 3, strides=2, pad_values=1.0, name="binary", **BINARY),
        tf.keras.layers.GlobalAveragePooling2D(),
        tf.keras.layers.Dense(2, name="classifier"),
    ])
    converted = cbcnify(model, orientations=4)
    assert isinstance(converted, tf.keras.Sequential)
    assert isinstance(converted.get_layer("binary"), cbcn_tf.CBConv2D)
    binary = converted.get_layer("binary")
    assert (binary.learned_filters, binary.strides, binary.padding, binary.pad_values) == (
        2, (2, 2), "same", 1.0)
    for name in ("float_stem", "classifier"):
        for new, old in zip(converted.get_layer(name).get_weights(),
                            model.get_layer(name).get_weights()):
            np.testing.assert_array_equal(new, old)
    assert converted.output_shape == model.output_shape


def test_cbcnify_rejects_eight_orientations_on_5x5_kernels():
    inputs = tf.keras.Input((8, 8, 8))
    outputs = lq.layers.QuantConv2D(8, 5, input_quantizer="ste_sign",
                                    kernel_quantizer="ste_sign", name="wide")(inputs)
    with pytest.raises(ValueError, match="wide: orientations=8"):
        cbcnify(tf.keras.Model(inputs, outputs), orientations=8)


def test_cbcnify_maps_magnitude_aware_sign_to_a_channel_scale():
    xnor = create_model("xnor_resnet18_doubled", kernel_stage=(2, 2, 4, 4), orientations=4)
    layers = [layer for layer in cbcnify(xnor, 4).layers if isinstance(layer, cbcn_tf.CBConv2D)]
    assert {layer.scale for layer in layers} == {"channel_mean"}
    assert {type(layer.kernel_quantizer) for layer in layers} == {lq.quantizers.SteSign}
    assert {type(layer.input_quantizer) for layer in layers} == {lq.quantizers.SteSign}


def test_unknown_model_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="Unknown model 'resnet9000'") as info:
        create_model("resnet9000")
    assert all(name in str(info.value) for name in MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_min_input_size_is_the_models_real_downsampling(name):
    """The recorded minimum is the product of the strides: the last stage runs on a 1x1 map
    there and on a 2x2 map at twice the size."""
    size = model_min_input_size(name)
    assert isinstance(size, int) and size > 1
    for side, last_map in ((size, (1, 1)), (2 * size, (2, 2))):
        model = create_model(name, **{**small_kwargs(name), "input_shape": (side, side, 3)})
        pool = next(layer for layer in model.layers
                    if isinstance(layer, tf.keras.layers.GlobalAveragePooling2D))
        assert pool.input_shape[1:3] == last_map, (side, pool.input_shape)


def test_min_input_size_of_an_unknown_model_lists_the_valid_ones():
    with pytest.raises(ValueError, match="Unknown model 'resnet9000'.*cbcn_lenet"):
        model_min_input_size("resnet9000")


def test_register_model_records_metadata_and_returns_the_function():
    def tiny_test_model(**kwargs):
        return None

    try:
        assert register_model(min_input_size=16)(tiny_test_model) is tiny_test_model
        assert model_min_input_size("tiny_test_model") == 16
    finally:
        registry._MODELS.pop("tiny_test_model", None)


def test_register_model_refuses_a_second_model_with_the_same_name():
    def cbcn_resnet18(**kwargs):
        return None

    with pytest.raises(ValueError, match="already registered"):
        register_model(cbcn_resnet18)
