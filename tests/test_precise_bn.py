"""Precise BatchNorm statistics (cbcn_tf/training/precise_bn.py): the re-estimated moving
statistics against a NumPy reference, and what `train` does with them."""
import numpy as np
import pytest
import tensorflow as tf

from cbcn_tf import config as config_lib
from cbcn_tf import training
from cbcn_tf.training import precise_bn


def _conv_bn_model(orientations=None):
    inputs = tf.keras.Input((5, 5, 2))
    conv = tf.keras.layers.Conv2D(4, 3, padding="same", use_bias=False,
                                  kernel_initializer=tf.keras.initializers.RandomNormal(seed=1))
    x = conv(inputs)
    x = tf.keras.layers.BatchNormalization(momentum=0.9)(x)
    outputs = tf.keras.layers.BatchNormalization(momentum=0.99)(tf.nn.relu(x))
    return tf.keras.Model(inputs, outputs), conv


def test_statistics_are_the_average_of_the_batch_statistics():
    model, conv = _conv_bn_model()
    rng = np.random.default_rng(0)
    batches = [(rng.normal(2.0, 3.0, (6, 5, 5, 2)).astype(np.float32), None) for _ in range(7)]
    assert precise_bn.reestimate_batch_norm(model, batches, max_batches=5) == 5
    first, second = [layer for layer in model.layers
                     if isinstance(layer, tf.keras.layers.BatchNormalization)]
    assert set(precise_bn.batch_norm_layers(model)) == {first, second}
    # NumPy reference for the first BN: per-channel moments of conv(x) over (N, H, W), averaged
    # over the first 5 batches; Keras averages the Bessel-corrected batch variance.
    outs = [conv(x).numpy().reshape(-1, 4) for x, _ in batches[:5]]
    m = outs[0].shape[0]
    np.testing.assert_allclose(first.moving_mean.numpy(),
                               np.mean([o.mean(0) for o in outs], 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(first.moving_variance.numpy(),
                               np.mean([o.var(0) * m / (m - 1) for o in outs], 0), rtol=1e-4)
    # The second BN sees the first one's training-mode output (batch statistics).
    normed = [np.maximum((o - o.mean(0)) / np.sqrt(o.var(0) + first.epsilon), 0) for o in outs]
    np.testing.assert_allclose(second.moving_mean.numpy(),
                               np.mean([n.mean(0) for n in normed], 0), rtol=1e-4, atol=1e-5)
    assert (first.momentum, second.momentum) == (0.9, 0.99)  # restored
    # Nothing else moved, and max_batches=0 changes nothing.
    before = [v.numpy().copy() for v in model.variables]
    assert precise_bn.reestimate_batch_norm(model, batches, max_batches=0) == 0
    for a, b in zip(before, model.variables):
        np.testing.assert_array_equal(a, b.numpy())


def test_orientation_batch_norm_is_reestimated_too():
    from cbcn_tf.orientation_layers import OrientationBatchNormalization

    inputs = tf.keras.Input((3, 3, 8))
    model = tf.keras.Model(inputs, OrientationBatchNormalization(4)(inputs))
    rng = np.random.default_rng(1)
    batches = [rng.normal(1.0, 2.0, (4, 3, 3, 8)).astype(np.float32) for _ in range(3)]
    assert precise_bn.reestimate_batch_norm(model, batches, 10) == 3
    # Channel c * 4 + k belongs to map c: statistics over (N, H, W, k).
    means = [b.reshape(-1, 2, 4).transpose(1, 0, 2).reshape(2, -1).mean(1) for b in batches]
    layer = precise_bn.batch_norm_layers(model)[0]
    np.testing.assert_allclose(layer.moving_mean.numpy(), np.mean(means, 0), rtol=1e-5)


@pytest.mark.slow  # two runs of 2 epochs
def test_train_saves_reestimated_statistics_and_leaves_training_alone(tmp_path):
    base = ["epochs=2", "steps_per_epoch=6", "model_kwargs.kernel_stage=[2, 2, 2, 2]",
            "batch_size=16", "deterministic=true"]
    runs = {}
    for name, extra in (("precise", []), ("keras", ["precise_bn_batches=0"])):
        cfg = config_lib.load_config("digits_demo", base + extra)
        runs[name] = (cfg, training.train(cfg, str(tmp_path / name), verbose=0))
    cfg, result = runs["precise"]
    saved = training.load_model(str(tmp_path / "precise"))
    layers = precise_bn.batch_norm_layers(saved)
    stats = [layer.moving_mean.numpy().copy() for layer in layers]
    # model.h5 holds the statistics re-estimated at the final weights: doing it again on the
    # same (seeded) batches gives them back.
    # (at most one epoch of batches: steps_per_epoch=6)
    assert precise_bn.precise_batch_norm(saved, training.resolve_config(cfg)) == 6
    for a, layer in zip(stats, layers):
        np.testing.assert_allclose(a, layer.moving_mean.numpy(), rtol=1e-5, atol=1e-6)
    # Training is unchanged (same losses, same weights); only the BN statistics differ.
    keras_model = runs["keras"][1].model
    np.testing.assert_allclose([r["loss"] for r in result.history],
                               [r["loss"] for r in runs["keras"][1].history], rtol=1e-6)
    for a, b in zip(result.model.trainable_weights, keras_model.trainable_weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
    assert any(not np.allclose(a, b.moving_mean.numpy())
               for a, b in zip(stats, precise_bn.batch_norm_layers(keras_model)))


def test_negative_batches_is_a_config_error():
    with pytest.raises(config_lib.ConfigError, match="precise_bn_batches"):
        config_lib.check_values(config_lib.TrainConfig(precise_bn_batches=-1))


def test_reestimation_adds_no_variable_to_the_model():
    model, _ = _conv_bn_model()
    names = sorted(v.name for v in model.variables)
    checkpoint_before = len(tf.train.Checkpoint(model=model)._checkpoint_dependencies or ())
    batches = [np.ones((2, 5, 5, 2), np.float32)] * 2
    precise_bn.reestimate_batch_norm(model, batches, 2)
    assert sorted(v.name for v in model.variables) == names
    assert len(model.non_trainable_weights) == 4  # two BN layers' moving mean / variance
    assert len(tf.train.Checkpoint(model=model)._checkpoint_dependencies or ()) == checkpoint_before
