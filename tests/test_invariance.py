"""Quarter-turn invariant CBCNs (docs/METHOD.md §12): layers against NumPy references, exact
invariance of every zoo model at even and odd sizes, each symmetry break switched back one at a
time, serialisation and LCE export."""

import cbcn_tf  # noqa: F401  (Keras 2 before tensorflow)
import larq as lq
import numpy as np
import pytest
import tensorflow as tf

from cbcn_tf import invariance as inv
from cbcn_tf.converters import export_lce
from cbcn_tf.invariance import make_invariant
from cbcn_tf.models import blocks, cbcnify, create_model
from cbcn_tf.models.resnet import resnet
from cbcn_tf.rewrite import is_binary_layer
from tests.reference import randomize_statistics, rotate

PARTS = ("stem", "norm", "activation", "shortcut", "downsample", "pool")


@pytest.fixture(autouse=True)
def _seed():
    tf.keras.utils.set_random_seed(0)

SLOPES = (0.05, 0.5)  # PReLU slopes of the randomised models


def logits(model, x):
    """Pre-softmax outputs: the classifier applied to its input, in float64."""
    dense = model.get_layer("predictions")
    features = tf.keras.Model(model.input, dense.input)(x, training=False).numpy()
    kernel, bias = dense.get_weights()
    return features.astype(np.float64) @ kernel + bias


def rotation_error(model, seed=1, turns=(1, 2, 3)):
    """max |logits(rot(x)) - logits(x)| over the turns, one forward pass for all of them."""
    x = np.random.default_rng(seed).normal(size=(2, *model.input_shape[1:])).astype(np.float32)
    out = logits(model, np.concatenate([x] + [rotate(x, t) for t in turns]))
    out = out.reshape(1 + len(turns), len(x), -1)
    return float(np.abs(out[1:] - out[0]).max())


def small(name, size, invariant=True, orientations=4, **kwargs):
    channels = 1 if name == "cbcn_lenet" else 3
    kwargs = {**dict(kernel_stage=(2, 2, 2, 2), input_shape=(size, size, channels),
                     orientations=orientations, num_classes=5, invariant=invariant), **kwargs}
    return randomize_statistics(create_model(name, **kwargs), slopes=SLOPES)


_CACHE = {}


def zoo(name, size, invariant=True, **kwargs):
    """``small`` for tests that only read the model (built once per module)."""
    key = (name, size, repr(invariant), repr(sorted(kwargs.items())))
    if key not in _CACHE:
        _CACHE[key] = small(name, size, invariant, **kwargs)
    return _CACHE[key]


def tiny(size=16, invariant=True, orientations=4, kind="cbcn", convs=1, **kwargs):
    """The zoo's blocks, two stages of one block (strides 1, 2): every part, fast to build."""
    conv = blocks.BinaryConv(kind, orientations if kind == "cbcn" else 1,
                             kernel_quantizer="gaussian_sign" if kind == "cbcn"
                             else "magnitude_aware_sign")
    model = resnet(name="tiny", input_shape=(size, size, 3), num_classes=5, conv=conv,
                   stem="cifar", stem_width=2 * orientations,
                   stage_widths=(2 * orientations, 2 * orientations), strides=(1, 2),
                   blocks_per_stage=1, convs_per_block=convs)
    if kind == "xnor":
        return randomize_statistics(
            cbcnify(model, orientations, invariant=invariant, **kwargs), slopes=SLOPES)
    return randomize_statistics(make_invariant(model, orientations, invariant, **kwargs),
                                slopes=SLOPES)


# ---------------------------------------------------------------------- exact invariance
EXACT = [  # every fixed square size is exact; these cover even and odd maps at every stride
    ("cbcn_resnet18", 16), ("cbcn_resnet18", 17), ("cbcn_resnet18_imagenet", 32),
    ("cbcn_resnet18_imagenet", 33), ("cbcn_lenet", 28), ("cbcn_lenet", 17),
    ("cbcn_wrn22", 15), ("cbcn_wrn40", 8),
]


@pytest.mark.parametrize("name,size", EXACT)
def test_zoo_models_are_invariant_to_quarter_turns(name, size):
    assert rotation_error(zoo(name, size)) < 1e-4


@pytest.mark.parametrize("name,size", [("cbcn_resnet18", 16), ("cbcn_lenet", 28)])
def test_full_precision_twins_are_invariant(name, size):
    model = small(name, size, binary=False)
    assert not any(is_binary_layer(layer) for layer in model.layers)
    assert rotation_error(model) < 1e-4


def test_mean_orientation_pooling_is_invariant():
    assert rotation_error(tiny(invariant={"pool": "mean"})) < 1e-4


@pytest.mark.parametrize("name,size", [("tiny", 16), ("cbcn_resnet18", 17), ("cbcn_lenet", 28)])
def test_align_head_is_invariant_and_keeps_every_feature(name, size):
    model = (tiny(invariant={"pool": "align"}) if name == "tiny"
             else zoo(name, size, invariant={"pool": "align"}))
    assert rotation_error(model) < 1e-4
    align = [layer for layer in model.layers if isinstance(layer, inv.OrientationAlign)]
    assert len(align) == 1
    dense = model.layers[-1]
    assert dense.kernel.shape[0] == align[0].output.shape[-1]  # C * K inputs, not C


@pytest.mark.parametrize("option,head", [(True, inv.OrientationAlign),
                                         ({"pool": "max"}, inv.OrientationPooling)])
def test_invariant_true_builds_the_align_head_and_pool_max_the_max_head(option, head):
    """``invariant=True`` ends in ORAlign (C * K classifier inputs); ``{"pool": "max"}`` in
    orientation max-pooling (C inputs); every other switch is on in both."""
    model = small("cbcn_lenet", 16, invariant=option)
    heads = [layer for layer in model.layers
             if isinstance(layer, (inv.OrientationAlign, inv.OrientationPooling))]
    assert [type(layer) for layer in heads] == [head]
    if head is inv.OrientationPooling:
        assert heads[0].mode == "max"
    width = 2 * 4  # the last stage's learned maps times K
    assert model.get_layer("predictions").kernel.shape[0] == (
        width if head is inv.OrientationAlign else width // 4)
    assert isinstance(model.get_layer("stem_conv"), inv.LiftingConv2D)
    assert isinstance(model.get_layer("conv2_bn"), inv.OrientationBatchNormalization)
    assert rotation_error(model) < 1e-4


def test_binary_stem_is_invariant_and_binary():
    model = zoo("cbcn_resnet18", 17, invariant={"stem": "binary"})
    assert is_binary_layer(model.get_layer("stem_conv"))
    assert rotation_error(model) < 1e-4


@pytest.mark.parametrize("orientations,turns", [(8, (1, 2, 3)), (2, (2,))])
def test_other_orientation_counts(orientations, turns):
    """K = 8 is invariant to quarter turns too (two 45-degree steps); K = 2 to half turns."""
    model = tiny(orientations=orientations)
    assert rotation_error(model, turns=turns) < 1e-4
    if orientations == 2:  # a quarter turn is not a symmetry of K = 2
        assert rotation_error(model, turns=(1,)) > 1e-2


def trained_lenet(invariant):
    """``small`` LeNet after three SGD steps in training mode."""
    model = small("cbcn_lenet", 16, invariant=invariant, dropout=0.0)
    optimizer = tf.keras.optimizers.SGD(0.1)
    rng = np.random.default_rng(5)
    x = rng.normal(1.0, 2.0, size=(8, 16, 16, 1)).astype(np.float32)
    y = rng.integers(0, 5, 8)
    for _ in range(3):
        with tf.GradientTape() as tape:
            loss = tf.keras.losses.sparse_categorical_crossentropy(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return model


def test_invariant_after_training_steps():
    """Training-mode BN (statistics shared over orientations) and updated weights keep it."""
    model = trained_lenet({"pool": "max"})
    bn = model.get_layer("conv2_bn")
    assert bn.moving_mean.shape == (2,) and not np.allclose(bn.moving_mean.numpy(), 0.0)
    assert rotation_error(model) < 1e-4


def test_align_head_after_training_is_exact_where_each_largest_response_is_unique():
    """ORAlign rolls each map to its largest response: exact for an input whose maps each have
    one largest response (or K equal ones). A binary net's responses are discrete, so two can
    tie, and then the roll follows the position, not the turn (docs/METHOD.md §12.3)."""
    model = trained_lenet(True)
    align = next(layer for layer in model.layers if isinstance(layer, inv.OrientationAlign))
    x = np.random.default_rng(1).normal(size=(16, 16, 16, 1)).astype(np.float32)
    turned = np.concatenate([rotate(x, t) for t in range(4)])
    features = tf.keras.Model(model.input, align.input)(turned, training=False).numpy()
    grouped = np.sort(features.reshape(4, len(x), -1, 4), axis=-1)  # (turn, n, map, K)
    top, second, low = grouped[..., -1], grouped[..., -2], grouped[..., 0]
    clear = ((top - second > 1e-5) | (top - low < 1e-7)).all(axis=(0, 2))  # (n,)
    out = logits(model, turned).reshape(4, len(x), -1)
    gap = np.abs(out[1:] - out[0]).max(axis=(0, 2))
    assert clear.sum() >= 4, clear
    assert gap[clear].max() < 1e-4


@pytest.mark.parametrize("part", PARTS)
def test_each_symmetry_break_switched_back_fails(part):
    """The invariance test fails when any one part is switched back to the plain layer."""
    assert rotation_error(tiny()) < 1e-4
    assert rotation_error(tiny(invariant={part: None if part in ("stem", "pool") else False})
                          ) > 1e-2


def test_odd_sizes_need_only_the_shortcut_pools():
    """At 17x17 every stride-2 conv is already symmetric; the 2x2 shortcut pools are not."""
    broken = tiny(17, invariant={"downsample": False})
    assert rotation_error(broken) > 1e-2
    fixed = tiny(17)
    assert fixed.get_layer("stage2_block1_conv1").strides == (2, 2)
    assert fixed.get_layer("stage2_block1_shortcut_pool").pool_size == (3, 3)
    even = tiny(16)  # on even maps: a stride-1 conv, then aligned 2x2 average pooling
    assert even.get_layer("stage2_block1_conv1").strides == (1, 1)
    assert even.get_layer("stage2_block1_conv1_pool").pool_size == (2, 2)


def test_plain_models_are_not_invariant():
    assert rotation_error(tiny(17, invariant=False)) > 1e-2


@pytest.mark.parametrize("convs", [1, 2])
def test_cbcnify_invariant(convs):
    """cbcnify(..., invariant=True) on an XNOR net (doubled shortcuts / basic blocks)."""
    model = tiny(kind="xnor", convs=convs)
    assert sum(isinstance(layer, cbcn_tf.CBConv2D) for layer in model.layers) == 2 * convs
    assert rotation_error(model) < 1e-4


# --------------------------------------------------------------------- defaults, errors
def test_defaults_unchanged():
    """Invariance is off unless asked for: the default model has none of the orientation
    layers and the same layers as ``invariant=False``; ``invariant=True`` does have them."""
    settings = dict(kernel_stage=(2, 2, 2, 2), input_shape=(16, 16, 3))
    kinds = (inv.LiftingConv2D, inv.CirculantConv2D, inv.OrientationBatchNormalization,
             inv.OrientationPReLU, inv.OrientationPooling, inv.OrientationAlign)
    plain = create_model("cbcn_resnet18", **settings)
    explicit = create_model("cbcn_resnet18", invariant=False, **settings)
    invariant = zoo("cbcn_resnet18", 16)
    assert not any(isinstance(layer, kinds) for layer in plain.layers)
    assert [(type(layer), layer.output_shape) for layer in plain.layers] == [
        (type(layer), layer.output_shape) for layer in explicit.layers]
    assert sum(isinstance(layer, kinds) for layer in invariant.layers) > 10


def test_errors_name_the_problem():
    xnor = resnet(name="xnor", input_shape=(8, 8, 3), num_classes=5,
                  conv=blocks.BinaryConv("xnor", kernel_quantizer="magnitude_aware_sign"),
                  stem="cifar", stem_width=8, stage_widths=(8,), strides=(2,),
                  blocks_per_stage=1)
    with pytest.raises(ValueError, match="cbcnify"):
        make_invariant(xnor, 4)
    with pytest.raises(ValueError, match="Unknown invariance option"):
        create_model("cbcn_lenet", invariant={"nrom": False})
    with pytest.raises(ValueError, match="fixed input_shape"):
        create_model("cbcn_lenet", kernel_stage=(2, 2, 2, 2), input_shape=(None, None, 1),
                     invariant=True)


# ------------------------------------------------------------------------ serialisation
def test_layers_get_config_round_trip():
    layers = [inv.LiftingConv2D(2, 3, orientations=4, input_quantizer="ste_sign",
                                kernel_quantizer="ste_sign", scale="channel_mean",
                                use_bias=True),
              inv.CirculantConv2D(2, 1, orientations=4, use_bias=True),
              inv.OrientationBatchNormalization(4, momentum=0.8),
              inv.OrientationPReLU(4), inv.OrientationPooling(4, "mean"),
              inv.OrientationAlign(4)]
    for layer in layers:
        clone = tf.keras.layers.deserialize(tf.keras.layers.serialize(layer))
        assert type(clone) is type(layer)
        assert clone.get_config() == layer.get_config()


def test_invariant_model_saves_and_loads(tmp_path):
    model = tiny(9)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"LiftingConv2D", "CirculantConv2D", "OrientationBatchNormalization",
            "OrientationPReLU", "OrientationAlign"} <= kinds
    path = str(tmp_path / "model.h5")
    model.save(path)
    loaded = tf.keras.models.load_model(path)
    x = np.random.default_rng(6).normal(size=(2, 9, 9, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-6)


# --------------------------------------------------------------------------------- export
@pytest.mark.lce
@pytest.mark.parametrize("name,size,options", [
    ("cbcn_resnet18", 16, True), ("cbcn_resnet18", 17, {"stem": "binary"}),
    ("cbcn_resnet18_imagenet", 32, True), ("cbcn_resnet18", 16, {"pool": "max"}),
])
def test_invariant_models_export_to_lce(tmp_path, name, size, options):
    """Even maps (stride-1 bconv + 2x2 pool, 4x4 max-pool), odd maps (stride-2 bconv with
    TF-SAME (1, 1) padding) and the binary lifting stem all become LceBconv2d ops; the
    flatbuffer matches Keras."""
    model = zoo(name, size, invariant=options)
    path = tmp_path / "model.tflite"
    result = export_lce(model, path)
    binary = [layer.name for layer in model.layers
              if isinstance(layer, lq.layers.QuantConv2D) and is_binary_layer(layer)]
    assert result.ops["LceBconv2d"] == len(binary) == len(result.binary_layers) > 0
    assert result.float_binary_layers == () and result.parity.ok
    assert result.parity.mismatched == 0, result.parity
