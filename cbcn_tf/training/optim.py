"""Optimiser, learning-rate schedule, coupled weight decay and compiling for classification."""
from __future__ import annotations

import math
import typing

import tensorflow as tf

from cbcn_tf import config as config_lib
from cbcn_tf.rewrite import iter_layers
from cbcn_tf.training.center_loss import CenterLossModel

WEIGHT_DECAY_SCOPES = typing.get_args(config_lib.WeightDecayScope)


def scaled_lr(config: config_lib.TrainConfig) -> float:
    """``lr`` after the ``lr_scaling`` rule: ``lr * batch_size / base_batch_size`` if "linear".

    Example:
        >>> cfg = config_lib.TrainConfig(lr=0.1, batch_size=1024, lr_scaling="linear",
        ...                              base_batch_size=256)
        >>> round(scaled_lr(cfg), 6)
        0.4
    """
    if config.lr_scaling == "linear":
        return config.lr * config.batch_size / config.base_batch_size
    return config.lr


def lr_schedule(config: config_lib.TrainConfig):
    """Learning rate per epoch: piecewise constant, ``lr * lr_gamma ** #(milestones <= epoch)``
    (``lr_decay="step"``), or cosine, ``lr * (1 + cos(pi * epoch / epochs)) / 2``.

    The rate depends on the epoch only (Keras passes the current rate as a second argument,
    which is ignored), so a resumed run gets the same rates as an uninterrupted one.

    ``lr`` is first scaled by `scaled_lr` (``lr_scaling``).

    Example:
        >>> schedule = lr_schedule(config_lib.load_config("cifar10_resnet18_k4"))
        >>> [round(schedule(epoch), 6) for epoch in (0, 59, 60, 120, 160)]
        [0.1, 0.1, 0.02, 0.004, 0.0008]
        >>> cosine = lr_schedule(config_lib.load_config(
        ...     "mnist_lenet", ["lr_decay=cosine", "lr=0.01", "epochs=50"]))
        >>> [round(cosine(epoch), 6) for epoch in (0, 25, 49)]
        [0.01, 0.005, 1e-05]
    """
    milestones = sorted(config.lr_milestones)
    base = scaled_lr(config)

    def schedule(epoch: int, current_lr=None) -> float:
        if config.lr_decay == "cosine":
            # The center-loss epochs after `epochs` keep the last epoch's rate.
            last = min(epoch, config.epochs - 1)
            rate = base * (1 + math.cos(math.pi * last / config.epochs)) / 2
        else:
            rate = base * config.lr_gamma ** sum(epoch >= m for m in milestones)
        if epoch < config.lr_warmup_epochs:  # linear warm-up (config key lr_warmup_epochs)
            rate *= (epoch + 1) / (config.lr_warmup_epochs + 1)
        return rate

    return schedule


def add_weight_decay(model: tf.keras.Model, weight_decay: float, scope: str = "all") -> None:
    """Add the coupled L2 loss ``weight_decay / 2 * sum ||v||^2`` to ``model.losses``.

    Its gradient ``weight_decay * v`` is what PyTorch's SGD ``weight_decay`` adds, so the
    released code's recipes carry over. ``scope`` is "all" (every trainable variable, the
    released code), "kernels" (conv / dense kernels incl. latent binary weights) or
    "float_kernels" (kernels of layers without a kernel quantizer).

    Example:
        >>> model = tf.keras.Sequential([tf.keras.layers.Dense(2, input_shape=(3,))])
        >>> add_weight_decay(model, 5e-4, "kernels")
        >>> len(model.losses)
        1
    """
    if weight_decay == 0:
        return
    if scope == "all":
        variables = list(model.trainable_variables)
    else:
        # KeyError for a name outside WEIGHT_DECAY_SCOPES (a TrainConfig cannot hold one).
        float_only = {"kernels": False, "float_kernels": True}[scope]
        variables = [
            layer.kernel for layer in iter_layers(model)
            if getattr(layer, "kernel", None) is not None and layer.kernel.trainable
            and not (float_only and getattr(layer, "kernel_quantizer", None) is not None)
        ]
    # Decay the latent float weights of larq's quantized variables, never their sign.
    variables = [getattr(v, "latent_variable", v) for v in variables]
    model.add_loss(lambda: weight_decay * tf.add_n([tf.nn.l2_loss(v) for v in variables]))


def make_optimizer(config: config_lib.TrainConfig) -> tf.keras.optimizers.Optimizer:
    if config.optimizer == "sgd":
        return tf.keras.optimizers.SGD(config.lr, momentum=config.momentum,
                                       nesterov=config.nesterov)
    return tf.keras.optimizers.Adam(config.lr)


def compile_for_classification(model: tf.keras.Model, optimizer=None, *,
                               jit_compile: bool = False, steps_per_execution: int = 1) -> None:
    """Compile with cross-entropy, top-1 ("accuracy") and top-5 ("top5") metrics.

    ``jit_compile`` and ``steps_per_execution`` are Keras' (config keys of the same names).
    """
    classifier = model.classifier if isinstance(model, CenterLossModel) else model
    num_classes = classifier.output_shape[-1]
    from_logits = not _ends_in_softmax(classifier)
    model.compile(
        optimizer=optimizer or "sgd",
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
        metrics=[
            tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            tf.keras.metrics.SparseTopKCategoricalAccuracy(k=min(5, num_classes), name="top5"),
        ],
        jit_compile=jit_compile, steps_per_execution=steps_per_execution,
    )


def _ends_in_softmax(model) -> bool:
    return getattr(model.layers[-1], "activation", None) is tf.keras.activations.softmax
