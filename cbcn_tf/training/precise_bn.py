"""Precise BatchNorm statistics: re-estimate every BN layer's moving mean and variance at the
current weights before the model is scored or saved (``precise_bn_batches``, on by default).

Why: Keras keeps BN statistics as an exponential moving average over the last training steps
(momentum 0.9: about the last 10 batches), i.e. over weights that were still changing. In a
full-precision net that lag is harmless; in a binary net the next layer takes ``sign(BN(x))``,
so a stale mean moves every sign threshold, and latent weights that cross zero change the
activations abruptly. Measured on the Table 2 CBCN LeNet (BENCHMARKS.md, "BatchNorm
statistics"): the test accuracy after each of the last epochs swung between 58% and 94%
while the training accuracy rose smoothly; the same weights with re-estimated
statistics scored 91-94%. The full-precision twin did not change.

How: the model runs in training mode (batch statistics, no weight update) on the first
``batches`` batches of a fixed, seeded pass over the training data, and each BN layer's moving
statistics become the plain average of those batches' statistics (momentum ``i / (i + 1)`` at
batch ``i``), the "precise BN" of Wu & Johnson, "Rethinking 'Batch' in BatchNorm" (2021).
Weights, optimizer state and training are untouched: only what inference uses changes, so a
run's training trajectory is the same with or without it. ``precise_bn_batches=0`` keeps
Keras' moving averages (the paper's and the released code's behaviour).
"""
from __future__ import annotations

import weakref

import tensorflow as tf

from cbcn_tf import data as data_lib


def batch_norm_layers(model: tf.keras.Model) -> list:
    """Every BatchNormalization layer of ``model`` (nested models and subclasses included)."""
    return [layer for layer in model.submodules
            if isinstance(layer, tf.keras.layers.BatchNormalization)]


def reestimate_batch_norm(model: tf.keras.Model, batches, max_batches: int) -> int:
    """Set every BN layer's moving statistics to the average over up to ``max_batches`` batches.

    ``batches`` yields ``(images, labels)`` or images. Returns the number of batches used
    (0: no BN layer, or ``max_batches`` is 0). Momenta are restored afterwards.

    Example:
        >>> import numpy as np
        >>> inputs = tf.keras.Input((2,))
        >>> model = tf.keras.Model(inputs, tf.keras.layers.BatchNormalization()(inputs))
        >>> data = [np.full((4, 2), v, np.float32) for v in (1.0, 3.0)]
        >>> reestimate_batch_norm(model, data, 10)
        2
        >>> model.layers[1].moving_mean.numpy()
        array([2., 2.], dtype=float32)
    """
    layers = batch_norm_layers(model)
    if not layers or max_batches < 1:
        return 0
    momenta = [layer.momentum for layer in layers]
    momentum, forward = _forward_pass(model)
    used = 0
    # object.__setattr__: Keras would track a tf.Variable set as a layer attribute as one of
    # the layer's weights (and checkpoints would then list it); this one is only borrowed.
    try:
        for layer in layers:
            object.__setattr__(layer, "momentum", momentum)
        for batch in batches:
            if used == max_batches:
                break
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            momentum.assign(used / (used + 1))  # moving * i / (i + 1) + batch / (i + 1)
            forward(images)
            used += 1
    finally:
        for layer, value in zip(layers, momenta):
            object.__setattr__(layer, "momentum", value)
    return used


_FORWARD = weakref.WeakKeyDictionary()


def _forward_pass(model):
    """(momentum variable, traced training-mode forward pass) of ``model``, made once per model.

    One momentum variable shared by every BN layer, so the forward pass is traced once (Keras
    then updates the averages with its unfused ops, which take a tensor momentum).
    """
    if model not in _FORWARD:
        momentum = tf.Variable(0.0, trainable=False, dtype=tf.float32)
        forward = tf.function(lambda images: model(images, training=True), reduce_retracing=True)
        _FORWARD[model] = (momentum, forward)
    return _FORWARD[model]


def reestimation_data(config) -> tf.data.Dataset:
    """The batches statistics are re-estimated on: the run's training data (split, rotation
    protocol, augmentation, batch size) in the seeded order of its first epoch. The order, like
    every tf.data shuffle, also depends on TF's global seed: within `train` (which sets it to
    ``config.seed``) re-estimating the same weights again gives the same statistics; another
    process gets them back after ``tf.keras.utils.set_random_seed(config.seed)``. A smaller
    shuffle buffer than training's keeps the start cheap (only a few dozen batches are read)."""
    return data_lib.load_dataset(
        config.dataset, config.train_split, training=True, rotate=config.rotate_train,
        seed=config.seed, batch_size=config.batch_size, data_dir=config.data_dir,
        validation_fraction=config.validation_fraction, epochs=(0, 1), shuffle_buffer=2048)


def batches_to_use(config) -> int:
    """``precise_bn_batches``, never more than one epoch of the run has (``steps_per_epoch``)."""
    return min(config.precise_bn_batches, config.steps_per_epoch or config.precise_bn_batches)


def precise_batch_norm(model: tf.keras.Model, config, data=None) -> int:
    """Re-estimate ``model``'s BN statistics as ``config`` asks (`batches_to_use` batches),
    on ``data`` if given (a `reestimation_data` built earlier), else on a new one."""
    batches = batches_to_use(config)
    if not batches:
        return 0
    return reestimate_batch_norm(model, data or reestimation_data(config), batches)


class PreciseBatchNorm(tf.keras.callbacks.Callback):
    """Re-estimates the classifier's BN statistics before each validation and at the end of
    training (only when weights changed since the last time), so the per-epoch validation
    scores, the backup and ``model.h5`` all use statistics of the current weights."""

    def __init__(self, model: tf.keras.Model, config):
        super().__init__()
        self.classifier, self.config, self.stale = model, config, True
        # Built once per fit (reading an image folder checks every file); each pass over it
        # yields the same batches (fixed order, stateless augmentation).
        self.data = None

    def on_train_batch_end(self, batch, logs=None):
        self.stale = True

    def on_test_begin(self, logs=None):
        self._update()

    def on_train_end(self, logs=None):
        self._update()

    def _update(self):
        if self.stale:
            if self.data is None:
                self.data = reestimation_data(self.config)
            precise_batch_norm(self.classifier, self.config, self.data)
            self.stale = False
