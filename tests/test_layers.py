"""CBConv2D against float references (docs/METHOD.md §3), serialisation, training, errors."""
import larq as lq
import numpy as np
import pytest
import tensorflow as tf

import cbcn_tf
from cbcn_tf.layers import CBConv2D
from tests import reference as ref


def _reference_forward(layer, x, pad_value):
    """conv2d(pad(sign(x)), sign(E_numpy)) * alpha, E from the plain-loop reference."""
    w = layer.kernel.latent_variable.numpy()
    k = layer.orientations
    sign_e = ref.larq_sign(ref.expand(w, k, tied=layer.tied))
    sx = ref.larq_sign(x)
    stride = layer.strides[0]
    size = layer.kernel_size[0]
    pads = [(0, 0), ref.same_pads(x.shape[1], size, stride), ref.same_pads(x.shape[2], size, stride),
            (0, 0)]
    padded = np.pad(sx, pads, constant_values=pad_value)
    out = tf.nn.conv2d(padded, sign_e, stride, "VALID").numpy()
    if layer.scale == "layer_mean":
        out = out * np.abs(w).mean()
    elif layer.scale == "channel_mean":
        out = out * np.abs(ref.expand(w, k, tied=layer.tied)).mean(axis=(0, 1, 2))
    return out


@pytest.mark.parametrize("k,size,stride,scale,pad_value,tied", [
    (4, 3, 1, "layer_mean", 1.0, False),
    (4, 3, 2, "layer_mean", 1.0, False),
    (4, 3, 2, "channel_mean", 0.0, False),
    (2, 5, 1, None, 1.0, False),
    (8, 3, 1, "channel_mean", 1.0, False),
    (8, 1, 2, "layer_mean", 1.0, False),
    (4, 3, 1, "layer_mean", 1.0, True),
    (1, 3, 1, "channel_mean", 0.0, False),
])
def test_forward_matches_reference(k, size, stride, scale, pad_value, tied):
    rng = np.random.default_rng(0)
    layer = CBConv2D(3, size, orientations=k, strides=stride, scale=scale, pad_values=pad_value,
                     tied=tied)
    x = rng.normal(size=(2, 10, 10, 2 * k)).astype(np.float32)
    y = layer(x).numpy()
    assert y.shape == (2, -(-10 // stride), -(-10 // stride), 3 * k)
    np.testing.assert_allclose(y, _reference_forward(layer, x, pad_value), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("quantizers", [("ste_sign", "ste_sign"), ("approx_sign", "gaussian_sign")])
def test_k1_equals_larq_quant_conv2d(quantizers):
    input_q, kernel_q = quantizers
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(2, 8, 8, 5)).astype(np.float32))
    ours = CBConv2D(6, 3, orientations=1, scale=None, input_quantizer=input_q,
                    kernel_quantizer=kernel_q, strides=2)
    theirs = lq.layers.QuantConv2D(6, 3, strides=2, padding="same", pad_values=1.0,
                                   input_quantizer=input_q, kernel_quantizer=kernel_q,
                                   use_bias=False)
    ours.build(x.shape)
    theirs.build(x.shape)
    theirs.set_weights([ours.get_weights()[0][:, :, :, 0, :]])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y_ours, y_theirs = ours(x), theirs(x)
        loss_ours = tf.reduce_sum(y_ours * tf.sin(y_ours))
        loss_theirs = tf.reduce_sum(y_theirs * tf.sin(y_theirs))
    np.testing.assert_allclose(y_ours.numpy(), y_theirs.numpy(), atol=1e-6)
    np.testing.assert_allclose(tape.gradient(loss_ours, x).numpy(),
                               tape.gradient(loss_theirs, x).numpy(), atol=1e-5)
    np.testing.assert_allclose(tape.gradient(loss_ours, ours.kernel.latent_variable)[:, :, :, 0, :],
                               tape.gradient(loss_theirs, theirs.kernel.latent_variable), atol=1e-5)


def test_kernel_gradient_is_cbp_of_the_expanded_gradient():
    """dL/dW = gaussian'(W) * CBP(dL/d sign(E)) with no scale (METHOD §3-§4)."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, 6, 6, 8)).astype(np.float32)
    upstream = rng.normal(size=(1, 6, 6, 8)).astype(np.float32)
    layer = CBConv2D(2, 3, orientations=4, scale=None, kernel_quantizer="gaussian_sign")
    layer.build(x.shape)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) * upstream)
    d_w = tape.gradient(loss, layer.kernel.latent_variable).numpy()

    sign_e = tf.Variable(layer.expanded_kernel().numpy())
    padded = np.pad(ref.larq_sign(x), [(0, 0), (1, 1), (1, 1), (0, 0)], constant_values=1.0)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.nn.conv2d(padded, sign_e, 1, "VALID") * upstream)
    d_e = tape.gradient(loss, sign_e).numpy()
    w = layer.kernel.latent_variable.numpy()
    np.testing.assert_allclose(d_w, ref.gaussian_grad(w) * ref.cbp(d_e, 4), rtol=1e-4, atol=1e-4)


def test_output_channels_and_weight_shapes():
    layer = CBConv2D(5, 3, orientations=4)
    y = layer(tf.zeros((1, 8, 8, 12)))
    assert y.shape == (1, 8, 8, 20)
    assert layer.kernel.shape == (3, 3, 3, 4, 5)
    assert [w.shape for w in layer.trainable_weights] == [(3, 3, 3, 4, 5)]
    tied = CBConv2D(5, 3, orientations=4, tied=True)
    tied(tf.zeros((1, 8, 8, 12)))
    assert tied.kernel.shape == (3, 3, 3, 5)


def test_initialiser_follows_released_code():
    layer = CBConv2D(64, 3, orientations=4)
    layer.build((None, 8, 8, 64))
    w = layer.kernel.latent_variable.numpy()
    np.testing.assert_allclose(w.std(), np.sqrt(2 / (64 * 9)), rtol=0.05)
    assert abs(w.mean()) < 0.01


def _model(k=4, **kwargs):
    x = tf.keras.Input((8, 8, 2 * k))
    y = CBConv2D(3, 3, orientations=k, **kwargs)(x)
    y = tf.keras.layers.BatchNormalization()(y)
    y = tf.keras.layers.GlobalAveragePooling2D()(y)
    return tf.keras.Model(x, tf.keras.layers.Dense(4)(y))


def test_config_round_trip():
    layer = CBConv2D(3, 3, orientations=8, tied=True, scale="channel_mean", strides=2,
                     pad_values=0.0, kernel_quantizer="ste_sign")
    config = layer.get_config()
    assert config["filters"] == 3 and config["orientations"] == 8 and config["tied"]
    clone = CBConv2D.from_config(config)
    assert clone.get_config() == config
    x = tf.random.normal((1, 8, 8, 16))
    layer(x)
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(layer(x).numpy(), clone(x).numpy())
    restored = tf.keras.layers.deserialize(tf.keras.layers.serialize(layer))
    assert isinstance(restored, CBConv2D)
    assert isinstance(restored.kernel_quantizer, lq.quantizers.SteSign)


@pytest.mark.parametrize("fmt", ["h5", "tf", "keras"])
def test_save_and_load_give_identical_outputs(tmp_path, fmt):
    model = _model(kernel_quantizer="gaussian_sign")
    x = np.random.default_rng(3).normal(size=(2, 8, 8, 8)).astype(np.float32)
    path = str(tmp_path / ("model.h5" if fmt == "h5" else "model.keras" if fmt == "keras"
                           else "saved"))
    model.save(path, save_format=None if fmt == "keras" else fmt)
    loaded = tf.keras.models.load_model(path)
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
    cb = [layer for layer in loaded.layers if isinstance(layer, CBConv2D)]
    assert cb and isinstance(cb[0].kernel_quantizer, cbcn_tf.GaussianSign)


def test_tf_function_matches_eager():
    model = _model()
    x = tf.random.normal((2, 8, 8, 8))
    np.testing.assert_allclose(tf.function(model)(x).numpy(), model(x).numpy(), atol=1e-6)


def test_mirrored_strategy_fit_matches_single_device(two_cpu_strategy):
    x = np.random.default_rng(4).normal(size=(16, 8, 8, 8)).astype(np.float32)
    y = np.arange(16) % 4
    tf.keras.utils.set_random_seed(0)
    single = _model()
    weights = single.get_weights()
    with two_cpu_strategy.scope():
        mirrored = _model()
        mirrored.set_weights(weights)
        mirrored.compile(tf.keras.optimizers.SGD(0.05),
                         tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    single.compile(tf.keras.optimizers.SGD(0.05),
                   tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    h_single = single.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    h_mirror = mirrored.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    # BN statistics are per replica under MirroredStrategy, so losses agree only closely.
    np.testing.assert_allclose(h_mirror.history["loss"], h_single.history["loss"], rtol=0.05)


@pytest.mark.slow  # 150 epochs, three times
@pytest.mark.parametrize("kernel_quantizer", ["gaussian_sign", "approx_sign", "ste_sign"])
def test_tiny_model_learns_a_fixed_batch(kernel_quantizer):
    tf.keras.utils.set_random_seed(5)
    x = tf.keras.Input((8, 8, 4))
    y = tf.keras.layers.Conv2D(8, 3, padding="same")(x)
    for _ in range(2):
        y = tf.keras.layers.BatchNormalization()(y)
        y = CBConv2D(4, 3, orientations=2, kernel_quantizer=kernel_quantizer)(y)
    y = tf.keras.layers.GlobalAveragePooling2D()(tf.keras.layers.BatchNormalization()(y))
    model = tf.keras.Model(x, tf.keras.layers.Dense(4)(y))
    model.compile(tf.keras.optimizers.Adam(0.01),
                  tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    data = np.random.default_rng(6).normal(size=(32, 8, 8, 4)).astype(np.float32)
    labels = np.arange(32) % 4
    first = model.evaluate(data, labels, verbose=0)
    model.fit(data, labels, batch_size=32, epochs=150, verbose=0)
    assert model.evaluate(data, labels, verbose=0) < 0.5 * first


@pytest.mark.parametrize("kwargs,shape,message", [
    (dict(orientations=3), (1, 8, 8, 6), "orientations=3"),
    (dict(orientations=8, kernel_size=5), (1, 8, 8, 8), "orientations=8"),
    (dict(kernel_size=2), (1, 8, 8, 4), "odd square"),
    (dict(orientations=4), (1, 8, 8, 6), r"input channels \(6\) must be a multiple"),
    (dict(scale="median"), (1, 8, 8, 4), "Unknown scale 'median'"),
    (dict(kernel_quantizer="sgn"), (1, 8, 8, 4), "Unknown quantizer 'sgn'"),
    (dict(input_quantizer="nope"), (1, 8, 8, 4), "Unknown quantizer 'nope'"),
    (dict(dilation_rate=2), (1, 8, 8, 4), "dilated"),
])
def test_bad_input_raises_clear_errors(kwargs, shape, message):
    kwargs = {"filters": 2, "kernel_size": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        CBConv2D(**kwargs)(tf.zeros(shape))
