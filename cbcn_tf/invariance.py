"""Exact quarter-turn invariance for CBCNs (docs/METHOD.md §12, beyond the paper).

A ``CBConv2D`` is equivariant to rotations by 360/K degrees (rotate the input and roll its K
orientation channels, and the output does the same, METHOD §2.5), but a network around it is
not. :func:`make_invariant` rebuilds a functional / Sequential model so that every layer keeps
that structure and the output is invariant to quarter turns of a square input, whatever its
size. Each part is a switch of :class:`Invariance` (all on by default):

- ``stem``: the first conv becomes a :class:`LiftingConv2D`, its learned filter expanded into K
  rotated copies (a CiF without orientation spin), "float" or "binary";
- ``norm``: BatchNormalization -> :class:`OrientationBatchNormalization` (statistics and
  parameters shared by the K orientation channels ``c * K + k`` of each map);
- ``activation``: PReLU -> :class:`OrientationPReLU` (one slope per map);
- ``shortcut``: every full-precision conv after the stem (the 1x1 shortcuts; in a
  ``binary=False`` twin all convs) -> :class:`CirculantConv2D` (a float CiF with spin);
- ``downsample``: every strided conv / pool gets a sampling grid symmetric about the map centre
  for the map size it sees (METHOD §12.2), so every fixed input size is exact;
- ``pool``: "align" (default; it scored above "max" upright in every seed on the digits, MNIST
  and CIFAR-10): global pooling, then each map's K responses rolled so that the largest comes
  first (:class:`OrientationAlign`, ORN's ORAlign; the classifier keeps C * K features); or
  "max" / "mean" over each map's K channels before global pooling (:class:`OrientationPooling`).

Example:
    >>> import cbcn_tf
    >>> from cbcn_tf.models import create_model
    >>> model = create_model("cbcn_resnet18", kernel_stage=(2, 2, 2, 2), invariant=True)
    >>> model.get_layer("stem_conv").__class__.__name__
    'LiftingConv2D'
"""
from __future__ import annotations

import dataclasses
import math

import larq as lq
import numpy as np
import tensorflow as tf

from cbcn_tf import cif, rewrite
from cbcn_tf.layers import CBConv2D
from cbcn_tf.orientation_layers import (  # noqa: F401  (public names of this module too)
    LiftingConv2D, CirculantConv2D, OrientationAlign, OrientationBatchNormalization,
    OrientationPReLU, OrientationPooling, lift_kernel, HEADS, SCALES, POOLS, STEMS)

# ---------------------------------------------------------------------------------- options
@dataclasses.dataclass(frozen=True)
class Invariance:
    """Which parts of a model :func:`make_invariant` changes (all on by default).

    Attributes:
        stem: "float" or "binary" lifting stem (:class:`LiftingConv2D`), or None (plain conv).
        norm: orientation-shared BatchNormalization.
        activation: orientation-shared PReLU.
        shortcut: full-precision convs after the stem as :class:`CirculantConv2D`.
        downsample: symmetric sampling grids for strided convs and pools.
        pool: "align" (ORAlign after global pooling, the default), "max" or "mean" over
            orientations before global pooling (``{"pool": "max"}``: the max-pool head), or
            None.
    """

    stem: str | None = "float"
    norm: bool = True
    activation: bool = True
    shortcut: bool = True
    downsample: bool = True
    pool: str | None = "align"

    def __post_init__(self):
        if self.stem not in (*STEMS, None):
            raise ValueError(f"stem must be one of {STEMS} or None, got {self.stem!r}.")
        if self.pool not in (*HEADS, None):
            raise ValueError(f"pool must be one of {HEADS} or None, got {self.pool!r}.")

    @classmethod
    def resolve(cls, value) -> "Invariance | None":
        """``True`` -> all parts, ``False`` / None -> None, a dict -> overrides, or itself.

        Example:
            >>> Invariance.resolve({"pool": "mean"}).pool
            'mean'
        """
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            unknown = set(value) - {f.name for f in dataclasses.fields(cls)}
            if unknown:
                raise ValueError(f"Unknown invariance option(s) {sorted(unknown)}; use "
                                 f"{[f.name for f in dataclasses.fields(cls)]}.")
            return cls(**value)
        raise TypeError(f"invariant must be a bool, a dict or an Invariance, got {value!r}.")


# ------------------------------------------------------------------------ symmetric grids
def grid_is_symmetric(size: int, window: int, stride: int, padding: str) -> bool:
    """Whether a window / stride / TF padding samples a map of ``size`` symmetrically.

    The sampling grid is symmetric about the map centre (so a quarter turn of the map maps
    windows onto windows) iff the total padding ``(out - 1) * stride + window - size`` is even
    and not negative with "same" padding (TF puts the odd pixel after), and zero with "valid"
    (the remainder is dropped at the end). METHOD §12.2.

    Example:
        >>> grid_is_symmetric(16, 3, 2, "same"), grid_is_symmetric(17, 3, 2, "same")
        (False, True)
    """
    if padding == "same":
        out = math.ceil(size / stride)
        total = (out - 1) * stride + window - size
        return total >= 0 and total % 2 == 0
    out = (size - window) // stride + 1
    return (out - 1) * stride + window - size == 0


def _output_size(size, window, stride, padding):
    return math.ceil(size / stride) if padding == "same" else (size - window) // stride + 1


def _spatial(shape):
    return [int(d) if d is not None else None for d in tf.TensorShape(shape)[1:3]]


# ---------------------------------------------------------------------------- the rewrite
_ELEMENTWISE = (tf.keras.layers.Add, tf.keras.layers.Subtract, tf.keras.layers.Multiply,
                tf.keras.layers.Average, tf.keras.layers.Maximum, tf.keras.layers.Minimum,
                tf.keras.layers.ReLU, tf.keras.layers.LeakyReLU, tf.keras.layers.ELU,
                tf.keras.layers.Dropout, tf.keras.layers.GaussianNoise)
_GLOBAL_POOLS = (tf.keras.layers.GlobalAveragePooling2D, tf.keras.layers.GlobalMaxPooling2D)
_POOLS = (tf.keras.layers.MaxPool2D, tf.keras.layers.AveragePooling2D)


class _Rewriter:
    """``replace`` and ``carry`` of :func:`cbcn_tf.rewrite.rewrite` for one model: tracks
    which layers output orientation channels and collects what cannot keep them."""

    def __init__(self, orientations, options: Invariance):
        self.k = orientations
        self.opts = options
        self.problems = []
        self.oriented = {}  # layer name -> whether its output carries orientation channels

    def replace(self, layer, calls):
        if len(calls) > 1:
            raise ValueError(f"{layer.name} is called {len(calls)} times; make_invariant "
                             "rebuilds models whose layers are used once.")
        oriented = any(self.oriented.get(name, False) for name in calls[0])
        new, self.oriented[layer.name] = self.layer(layer, layer.input_shape, oriented)
        return new

    def carry(self, old, new_layers):
        """Same shapes: the old weights; orientation-shared BN / PReLU: the mean over each
        map's K channels; otherwise the initialisation."""
        new = new_layers[0]
        weights = old.get_weights()
        if [w.shape for w in weights] == [w.shape for w in new.get_weights()]:
            new.set_weights(weights)
        elif isinstance(new, (OrientationBatchNormalization, OrientationPReLU)):
            new.set_weights([np.reshape(w, (-1, self.k)).mean(axis=1) for w in weights])

    def _clone(self, layer):
        return layer.__class__.from_config(layer.get_config())

    # Each method returns (list of new layers applied in order, output oriented?).
    def conv(self, layer, in_shape, oriented):
        k, opts = self.k, self.opts
        config = layer.get_config()
        strides = tuple(layer.strides)
        pool = None
        sizes = _spatial(in_shape)
        if opts.downsample and strides != (1, 1):
            windows = [(d - 1) * r + 1 for d, r in zip(layer.kernel_size, layer.dilation_rate)]
            if None in sizes:
                self.problems.append(f"{layer.name}: strided conv on a map of unknown size; "
                                     "build the model with a fixed input_shape")
            elif not all(grid_is_symmetric(n, w, s, layer.padding)
                         for n, w, s in zip(sizes, windows, strides)):
                after = [n if layer.padding == "same" else n - w + 1
                         for n, w in zip(sizes, windows)]
                if layer.padding != "same" or any(m % s for m, s in zip(after, strides)):
                    self.problems.append(
                        f"{layer.name}: no symmetric grid for stride {strides} on "
                        f"{sizes[0]}x{sizes[1]} maps with {layer.padding!r} padding")
                else:  # stride 1, then aligned pooling of the stride
                    config["strides"] = (1, 1)
                    pool = tf.keras.layers.AveragePooling2D(strides, strides, "valid",
                                                            name=f"{layer.name}_pool")
        if not oriented:
            if opts.stem is None:
                new = layer.__class__.from_config(config)
            else:
                if layer.filters % k:
                    self.problems.append(f"{layer.name}: stem width {layer.filters} is not a "
                                         f"multiple of orientations={k}")
                    return [self._clone(layer)], True
                binary = opts.stem == "binary"
                new = LiftingConv2D(
                    layer.filters // k, layer.kernel_size, orientations=k,
                    strides=config["strides"], padding=layer.padding, use_bias=layer.use_bias,
                    pad_values=1.0 if binary else 0.0,
                    input_quantizer="ste_sign" if binary else None,
                    kernel_quantizer="ste_sign" if binary else None,
                    kernel_constraint="weight_clip" if binary else None,
                    scale="layer_mean" if binary else None, name=layer.name)
        elif isinstance(layer, CBConv2D):
            if layer.orientations != k:
                self.problems.append(f"{layer.name}: CBConv2D with orientations="
                                     f"{layer.orientations}, the model uses {k}")
            new = CBConv2D.from_config(config)
        elif isinstance(layer, lq.layers.QuantConv2D) and (
                layer.input_quantizer is not None or layer.kernel_quantizer is not None):
            self.problems.append(f"{layer.name}: quantized {type(layer).__name__} without "
                                 "circulant filters; cbcnify(model, K, invariant=True) "
                                 "converts binary convs first")
            new = layer.__class__.from_config(config)
        elif opts.shortcut and not isinstance(layer, CirculantConv2D):
            if layer.filters % k or getattr(layer, "groups", 1) != 1:
                self.problems.append(f"{layer.name}: full-precision conv with {layer.filters} "
                                     f"filters (groups={getattr(layer, 'groups', 1)}) cannot "
                                     f"be circulant with K={k}")
                new = layer.__class__.from_config(config)
            else:
                new = CirculantConv2D(layer.filters // k, layer.kernel_size, orientations=k,
                                      strides=config["strides"], padding=layer.padding,
                                      use_bias=layer.use_bias,
                                      activation=config.get("activation"), name=layer.name)
        else:
            new = layer.__class__.from_config(config)
        return [new] + ([pool] if pool else []), True

    def pool(self, layer, in_shape):
        if not self.opts.downsample or tuple(layer.strides) == (1, 1):
            return [self._clone(layer)]
        sizes = _spatial(in_shape)
        if None in sizes:
            self.problems.append(f"{layer.name}: strided pooling on a map of unknown size; "
                                 "build the model with a fixed input_shape")
            return [self._clone(layer)]
        windows, strides = tuple(layer.pool_size), tuple(layer.strides)
        if all(grid_is_symmetric(n, w, s, layer.padding)
               for n, w, s in zip(sizes, windows, strides)):
            return [self._clone(layer)]
        wanted = [_output_size(n, w, s, layer.padding)
                  for n, w, s in zip(sizes, windows, strides)]
        chosen = []
        for n, w, s, out in zip(sizes, windows, strides, wanted):
            # grow the window by one (same output size), else an aligned stride x stride
            for window, padding in ((w, "same"), (w + 1, "same"), (s, "valid")):
                if (grid_is_symmetric(n, window, s, padding)
                        and _output_size(n, window, s, padding) == out):
                    chosen.append((window, padding))
                    break
            else:
                self.problems.append(f"{layer.name}: no symmetric pooling grid for stride {s} "
                                     f"on size {n}")
                return [self._clone(layer)]
        if chosen[0][1] != chosen[1][1]:
            self.problems.append(f"{layer.name}: non-square map {sizes} needs different "
                                 "paddings per axis")
            return [self._clone(layer)]
        config = layer.get_config()
        config.update(pool_size=(chosen[0][0], chosen[1][0]), padding=chosen[0][1])
        return [layer.__class__.from_config(config)]

    def layer(self, layer, in_shape, oriented):
        """New layers for ``layer`` and whether its output carries orientation channels."""
        k, opts = self.k, self.opts
        if isinstance(layer, tf.keras.layers.Conv2D) and not isinstance(
                layer, (tf.keras.layers.DepthwiseConv2D, tf.keras.layers.Conv2DTranspose)):
            return self.conv(layer, in_shape, oriented)
        if isinstance(layer, _POOLS):
            return self.pool(layer, in_shape), oriented
        if not oriented:
            return [self._clone(layer)], False
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            if isinstance(layer, OrientationBatchNormalization) or not opts.norm:
                return [self._clone(layer)], True
            config = layer.get_config()
            keep = ("momentum", "epsilon", "center", "scale", "name", "trainable", "dtype",
                    "beta_initializer", "gamma_initializer", "moving_mean_initializer",
                    "moving_variance_initializer", "beta_regularizer", "gamma_regularizer",
                    "beta_constraint", "gamma_constraint")
            return [OrientationBatchNormalization(
                k, **{key: config[key] for key in keep if key in config})], True
        if isinstance(layer, tf.keras.layers.PReLU):
            if not opts.activation:
                return [self._clone(layer)], True
            if sorted(layer.shared_axes or []) != [1, 2]:
                self.problems.append(f"{layer.name}: PReLU with shared_axes="
                                     f"{layer.shared_axes}; only [1, 2] (one slope per "
                                     "channel) has an orientation-shared form")
                return [self._clone(layer)], True
            return [OrientationPReLU(k, layer.get_config()["alpha_initializer"],
                                     name=layer.name)], True
        if isinstance(layer, _GLOBAL_POOLS):
            if opts.pool is None:
                return [self._clone(layer)], False
            if opts.pool == "align":
                if layer.get_config().get("keepdims"):
                    self.problems.append(f"{layer.name}: global pooling with keepdims=True; "
                                         "the align head needs (N, C*K) features")
                return [self._clone(layer),
                        OrientationAlign(k, name=f"{layer.name}_align")], False
            return [OrientationPooling(k, opts.pool, name=f"{layer.name}_orientations"),
                    self._clone(layer)], False
        if isinstance(layer, (OrientationPReLU, CirculantConv2D)) or isinstance(
                layer, _ELEMENTWISE) or (isinstance(layer, tf.keras.layers.Activation)
                                         and layer.get_config()["activation"] != "softmax"):
            return [self._clone(layer)], True
        self.problems.append(f"{layer.name}: {type(layer).__name__} on orientation channels "
                             "(supported there: convs, BatchNormalization, PReLU, pooling, "
                             "elementwise layers, global pooling)")
        return [self._clone(layer)], True


def make_invariant(model: tf.keras.Model, orientations: int = 4, invariant=True,
                   strict: bool = True) -> tf.keras.Model:
    """Rebuild ``model`` (functional or Sequential, fixed input size) invariant to quarter turns.

    ``invariant``: True (every part), a dict of :class:`Invariance` fields to switch parts
    (e.g. ``{"pool": "mean"}`` or ``{"norm": False}``), or an :class:`Invariance`. The model
    should already use ``CBConv2D`` for its binary convs (``cbcnify(model, K,
    invariant=True)`` converts XNOR convs first). Layers that keep their type keep their
    weights; BatchNormalization / PReLU start from the mean over each map's K channels;
    replaced convs and a classifier whose input width changes start from their initialisers.
    The result is not compiled.

    Raises:
        ValueError listing every layer that cannot keep the orientation structure (with
        ``strict``; ``strict=False`` leaves those layers as they are).

    Example:
        >>> import cbcn_tf
        >>> from cbcn_tf.models import create_model
        >>> plain = create_model("cbcn_lenet", kernel_stage=(2, 2, 2, 2))
        >>> make_invariant(plain, 4).get_layer("conv2_bn").__class__.__name__
        'OrientationBatchNormalization'
    """
    options = Invariance.resolve(invariant)
    if options is None:
        return model
    cif.check_orientations(orientations, 1)
    rewrite.require_graph_model(model, "make_invariant")
    rewriter = _Rewriter(orientations, options)
    new_model = rewrite.rewrite(model, rewriter.replace, rewriter.carry)
    if rewriter.problems and strict:
        raise ValueError(
            f"make_invariant(orientations={orientations}) cannot keep the orientation "
            f"structure of {model.name}:\n  " + "\n  ".join(rewriter.problems) +
            "\nPass strict=False to leave those layers as they are.")
    return new_model
