"""Sign gradients against their NumPy formulas (docs/METHOD.md §5)."""
import larq as lq
import numpy as np
import pytest
import tensorflow as tf

from cbcn_tf import quantizers
from tests import reference as ref

X = np.linspace(-3, 3, 121).astype(np.float32)


def _forward_and_grad(fn):
    x = tf.constant(X)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
    return y.numpy(), tape.gradient(y, x).numpy()


@pytest.mark.parametrize("name,formula", [
    ("gaussian_sign", ref.gaussian_grad),
    ("approx_sign", ref.approx_sign_grad),
    ("ste_sign", ref.ste_grad),
])
def test_sign_gradients_match_formulas(name, formula):
    y, grad = _forward_and_grad(quantizers.get(name))
    np.testing.assert_array_equal(y, ref.larq_sign(X))
    np.testing.assert_allclose(grad, formula(X), rtol=1e-5, atol=1e-6)


def test_gaussian_defaults_are_the_papers():
    _, grad = _forward_and_grad(quantizers.gaussian_sign)
    np.testing.assert_allclose(grad[X == 0], 3 * np.sqrt(2))  # A / sqrt(pi) = 4.243
    _, grad = _forward_and_grad(lambda x: quantizers.gaussian_sign(x, sigma=0.5, amplitude=2.0))
    np.testing.assert_allclose(grad, ref.gaussian_grad(X, 0.5, 2.0), rtol=1e-5, atol=1e-6)


def _binary_conv_model(input_quantizer):
    inputs = tf.keras.Input((8, 8, 4))
    x = lq.layers.QuantConv2D(8, 3, padding="same", pad_values=1.0, use_bias=False,
                              input_quantizer=input_quantizer,
                              kernel_quantizer=quantizers.GaussianSign(),
                              kernel_constraint="weight_clip")(inputs)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inputs, tf.keras.layers.Dense(3)(x))


@pytest.mark.lce
def test_forward_is_larqs_sign_so_lce_recognises_it():
    """Converted by LCE, a conv with the Gaussian sign on input and kernel becomes one
    LceQuantize + LceBconv2d (no float CONV_2D); plain tf.sign, which LCE does not
    recognise, stays a float conv (so the count can fail)."""
    from cbcn_tf.converters import audit_ops, lce_flatbuffer

    y, _ = _forward_and_grad(quantizers.gaussian_sign)
    np.testing.assert_array_equal(y, lq.math.sign(tf.constant(X)).numpy())
    assert quantizers.gaussian_sign(tf.constant([0.0])).numpy()[0] == 1.0

    counts = audit_ops(lce_flatbuffer(_binary_conv_model(quantizers.GaussianSign()))).counts
    assert counts.get("LceQuantize") == 1 and counts.get("LceBconv2d") == 1, counts
    assert "CONV_2D" not in counts, counts
    counts = audit_ops(lce_flatbuffer(_binary_conv_model(tf.sign))).counts
    assert "LceBconv2d" not in counts and counts.get("CONV_2D") == 1, counts


def test_string_alias_and_serialisation():
    q = lq.quantizers.get("gaussian_sign")
    assert isinstance(q, quantizers.GaussianSign) and q.precision == 1
    custom = quantizers.GaussianSign(sigma=0.7, amplitude=3.0)
    restored = lq.quantizers.get(lq.quantizers.serialize(custom))
    assert (restored.sigma, restored.amplitude) == (0.7, 3.0)
    _, grad = _forward_and_grad(restored)
    np.testing.assert_allclose(grad, ref.gaussian_grad(X, 0.7, 3.0), rtol=1e-5, atol=1e-6)


def test_bad_quantizer_arguments():
    with pytest.raises(ValueError, match="sigma > 0"):
        quantizers.GaussianSign(sigma=0)
    with pytest.raises(ValueError, match="Unknown quantizer 'gausian_sign'.*gaussian_sign"):
        quantizers.get("gausian_sign")


def test_known_quantizers_are_derived_from_larqs_registry():
    names = quantizers.known_quantizers()
    assert {"gaussian_sign", "approx_sign", "ste_sign", "magnitude_aware_sign"} <= set(names)
    for name in names:  # every listed name is one larq resolves to a quantizer
        assert isinstance(lq.quantizers.get(name), lq.quantizers.Quantizer), name
