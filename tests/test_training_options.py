"""Config options added for the reproduction campaign: speed options, lr warm-up, and the
cbcn_resnet18 keywords the slow-start ablation varies (scale, initializer, BN placement)."""
import numpy as np
import pytest
import tensorflow as tf

from cbcn_tf import config as config_lib
from cbcn_tf import training
from cbcn_tf.layers import CBConv2D
from cbcn_tf.models import create_model


def test_lr_warmup_ramps_linearly_then_follows_the_milestones():
    cfg = config_lib.TrainConfig(lr=0.1, lr_milestones=(3,), lr_gamma=0.5, lr_warmup_epochs=2)
    schedule = training.lr_schedule(cfg)
    np.testing.assert_allclose([schedule(e) for e in range(5)],
                               [0.1 / 3, 0.2 / 3, 0.1, 0.05, 0.05])
    no_warmup = training.lr_schedule(config_lib.TrainConfig(lr=0.1, lr_milestones=()))
    assert no_warmup(0) == 0.1


@pytest.mark.slow  # three runs of 2 epochs
def test_speed_options_leave_the_training_curve_unchanged(tmp_path):
    """Same seed: cache and steps_per_execution give the default's history. (jit_compile is
    Keras' own switch, passed through; it is not adopted, see BENCHMARKS.md.)"""
    base = ["epochs=2", "steps_per_epoch=4", "model_kwargs.kernel_stage=[2, 2, 2, 2]",
            "batch_size=16"]
    histories = {}
    for name, extra in (("default", []), ("cache", ["cache=true"]),
                        ("spe", ["steps_per_execution=2"])):
        cfg = config_lib.load_config("digits_demo", base + extra)
        result = training.train(cfg, str(tmp_path / name), verbose=0)
        histories[name] = [(row["loss"], row["val_accuracy"]) for row in result.history]
    np.testing.assert_allclose(histories["cache"], histories["default"], rtol=1e-6)
    np.testing.assert_allclose(histories["spe"], histories["default"], rtol=1e-6)
    saved = config_lib.read_config(str(tmp_path / "spe" / "config.yaml"))
    assert saved.steps_per_execution == 2 and saved.cache is False


def test_steps_per_execution_must_be_positive():
    with pytest.raises(config_lib.ConfigError, match="steps_per_execution"):
        config_lib.check_values(config_lib.TrainConfig(steps_per_execution=0))


def test_cbcn_resnet18_passes_scale_initializer_and_bn_placement():
    init = {"class_name": "VarianceScaling",
            "config": {"scale": 0.5, "mode": "fan_in", "distribution": "untruncated_normal"}}
    model = create_model("cbcn_resnet18", input_shape=(16, 16, 1), kernel_stage=(2, 2, 2, 2),
                         scale="channel_mean", kernel_initializer=init, bn="after")
    convs = [layer for layer in model.layers if isinstance(layer, CBConv2D)]
    assert len(convs) == 16 and all(layer.scale == "channel_mean" for layer in convs)
    assert all(layer.kernel_initializer.scale == 0.5 for layer in convs)
    # bn="after": every CBConv2D feeds its BatchNormalization (BN(conv(x))).
    for layer in convs:
        consumers = [node.outbound_layer for node in layer._outbound_nodes]
        assert [type(c).__name__ for c in consumers] == ["BatchNormalization"]
    # The default stays the released code's: layer_mean, He fan-in, BN before the conv.
    default = create_model("cbcn_resnet18", input_shape=(16, 16, 1), kernel_stage=(2, 2, 2, 2))
    conv = next(layer for layer in default.layers if isinstance(layer, CBConv2D))
    assert conv.scale == "layer_mean" and conv.kernel_initializer.scale == 2.0
    assert isinstance(conv._inbound_nodes[0].inbound_layers, tf.keras.layers.BatchNormalization)


def test_compile_passes_the_speed_options_to_keras():
    model = tf.keras.Sequential([tf.keras.layers.Dense(3, input_shape=(4,))])
    training.compile_for_classification(model, jit_compile=True, steps_per_execution=3)
    assert model._jit_compile is True
    assert int(model._steps_per_execution.numpy()) == 3
