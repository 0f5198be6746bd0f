"""Shared test setup: Keras 2 via cbcn_tf, two logical CPUs for MirroredStrategy tests."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import cbcn_tf  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before tf.keras is touched)
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
except RuntimeError:  # already initialised by an earlier import; tests needing 2 will skip
    pass


@pytest.fixture
def two_cpu_strategy():
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(devices) < 2:
        pytest.skip("needs two logical CPU devices configured before TF initialised")
    # ReductionToOneDevice: collective all-reduce keys of two MirroredStrategy objects in one
    # process can collide (TF), and the training tests build their own strategy.
    return tf.distribute.MirroredStrategy(devices[:2],
                                          cross_device_ops=tf.distribute.ReductionToOneDevice())
