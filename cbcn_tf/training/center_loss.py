"""Center-loss fine-tuning (docs/METHOD.md §9): the loss, the centre steps, a
Keras Model that trains with both and the callback that switches the term on."""
from __future__ import annotations

import tensorflow as tf

from cbcn_tf.errors import ConfigError


def center_loss(features, labels, centers):
    """``sum_i ||f_i - c_{y_i}||^2 / (2B)`` over a batch of B features.

    Example:
        >>> center_loss(tf.constant([[1.0, 0.0], [0.0, 2.0]]), tf.constant([0, 1]),
        ...             tf.zeros((2, 2))).numpy()
        1.25
    """
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    diff = features - tf.gather(centers, labels)
    batch = tf.cast(tf.shape(features)[0], features.dtype)
    return tf.reduce_sum(tf.square(diff)) / (2.0 * batch)


def center_deltas(features, labels, centers):
    """Centre steps of Wen et al. (2016): ``sum_{i: y_i = j} (c_j - f_i) / (1 + n_j)``.

    A centre moves by ``alpha * delta`` per batch; classes absent from the batch stay put.
    """
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    num_classes = tf.shape(centers)[0]
    sums = tf.math.unsorted_segment_sum(tf.gather(centers, labels) - features, labels, num_classes)
    counts = tf.math.unsorted_segment_sum(tf.ones_like(labels, features.dtype), labels, num_classes)
    return sums / (1.0 + counts)[:, None]


class CenterLossModel(tf.keras.Model):
    """Trains ``model`` with ``loss + weight * center_loss`` on the input of its final Dense.

    The centres (one per class) are not trained by the optimizer; after every step they move
    towards the batch features by ``alpha * center_deltas``. ``center_loss_weight`` is a
    variable, so a callback can switch the term on for a fine-tuning stage while the centres
    are tracked from the start. The metric "center_loss" reports the (unweighted) term; "loss"
    stays the classification loss. ``model`` itself is trained in place: save it, not this.

    Example:
        >>> inputs = tf.keras.Input((4,))
        >>> features = tf.keras.layers.Dense(3, activation="relu")(inputs)
        >>> base = tf.keras.Model(inputs, tf.keras.layers.Dense(2, activation="softmax")(features))
        >>> wrapper = CenterLossModel(base, weight=0.1)
        >>> from cbcn_tf.training import compile_for_classification
        >>> compile_for_classification(wrapper)
        >>> history = wrapper.fit(tf.zeros((8, 4)), tf.zeros((8,), tf.int64), verbose=0)
        >>> "center_loss" in history.history
        True
    """

    def __init__(self, model: tf.keras.Model, *, weight: float = 0.01, alpha: float = 0.5,
                 **kwargs):
        super().__init__(**kwargs)
        dense = _final_dense(model)
        self.classifier = model
        self.alpha = float(alpha)
        self._with_features = tf.keras.Model(model.inputs, [model.outputs[0], dense.input])
        # MEAN: under MirroredStrategy every replica's centre step is averaged.
        self.centers = self.add_weight(
            name="centers", shape=(dense.units, dense.input.shape[-1]), initializer="zeros",
            trainable=False, aggregation=tf.VariableAggregation.MEAN)
        self.center_loss_weight = self.add_weight(
            name="center_loss_weight", shape=(), trainable=False,
            initializer=tf.keras.initializers.Constant(weight))
        self.center_loss_tracker = tf.keras.metrics.Mean(name="center_loss")

    def call(self, inputs, training=None):
        return self.classifier(inputs, training=training)

    def train_step(self, data):
        x, y, sample_weight = tf.keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred, features = self._with_features(x, training=True)
            loss = self.compute_loss(x, y, y_pred, sample_weight)
            term = center_loss(features, y, self.centers)
            # compute_loss is already divided by the replica count; the extra term must be too.
            replicas = self.distribute_strategy.num_replicas_in_sync
            total = loss + self.center_loss_weight * term / replicas
        self.optimizer.minimize(total, self.trainable_variables, tape=tape)
        self.centers.assign_sub(self.alpha * center_deltas(features, y, self.centers))
        self.center_loss_tracker.update_state(term)
        return self.compute_metrics(x, y, y_pred, sample_weight)

    def test_step(self, data):
        x, y, sample_weight = tf.keras.utils.unpack_x_y_sample_weight(data)
        y_pred, features = self._with_features(x, training=False)
        self.compute_loss(x, y, y_pred, sample_weight)
        self.center_loss_tracker.update_state(center_loss(features, y, self.centers))
        return self.compute_metrics(x, y, y_pred, sample_weight)


class CenterLossStage(tf.keras.callbacks.Callback):
    """Switches the center loss on from ``start_epoch`` (the fine-tuning stage)."""

    def __init__(self, start_epoch: int, weight: float):
        super().__init__()
        self.start_epoch, self.weight = start_epoch, weight

    def on_epoch_begin(self, epoch, logs=None):
        self.model.center_loss_weight.assign(self.weight if epoch >= self.start_epoch else 0.0)


def _final_dense(model):
    for layer in reversed(model.layers):
        if isinstance(layer, tf.keras.layers.Dense):
            return layer
    raise ConfigError(
        f"Center loss needs a classifier ending in a Dense layer; {model.name} has none.")
