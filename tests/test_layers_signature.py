"""CBConv2D's constructor against larq's QuantConv2D, as larq tests its layers against Keras':
every QuantConv2D argument is accepted by CBConv2D with larq's default, except the
differences listed below, each with its reason."""
import inspect

import larq as lq
import pytest
import tensorflow as tf

from cbcn_tf.layers import CBConv2D


def _arguments(cls):
    return {name: p for name, p in inspect.signature(cls.__init__).parameters.items()
            if name != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD}


THEIRS = _arguments(lq.layers.QuantConv2D)
OURS = _arguments(CBConv2D)

# What CBConv2D adds: K (docs/METHOD.md §3.1), tied kernels (§2.4), the output scale (§3.2).
ADDED = {"orientations", "tied", "scale"}

# Defaults CBConv2D sets on purpose: {argument: CBConv2D's default}.
CHANGED_DEFAULTS = {
    # Pad amounts are always TF-SAME (METHOD §3.4): the "same-one" padding below acts with
    # "same" only, and rotation equivariance (§2.5) holds with SAME padding.
    "padding": "same",
    # +1 after the input sign: what LCE runs fastest (METHOD §3.4).
    "pad_values": 1.0,
    # A CBConv is binary by definition (METHOD §3.1): ApproxSign on inputs (the released
    # code's) and the paper's Gaussian sign gradient on weights (METHOD §5).
    "input_quantizer": "approx_sign",
    "kernel_quantizer": "gaussian_sign",
    # None means He normal on W's fan-in, the released code's initialisation (METHOD §3.5);
    # glorot_uniform would scale by the fans of the expanded kernel's shape.
    "kernel_initializer": None,
    # The released code clips W to [-1, 1] (METHOD §3.5).
    "kernel_constraint": "weight_clip",
    # No bias (METHOD §3.5): the BatchNormalization around every CBConv holds it.
    "use_bias": False,
}

# Taken through **kwargs and accepted at larq's default only (METHOD §3.5: grouped, dilated
# and channels-first convolutions are not supported): {argument: a value CBConv2D refuses}.
REFUSED_OTHERWISE = {"groups": 2, "dilation_rate": 2, "data_format": "channels_first"}

# The other arguments CBConv2D takes through **kwargs, and a non-default value of each.
PASSED_THROUGH = {
    "activation": "relu",
    "bias_initializer": "ones",
    "kernel_regularizer": "l2",
    "bias_regularizer": "l2",
    "activity_regularizer": "l2",
    "bias_constraint": "non_neg",
}


def test_arguments_are_quantconv2d_ones_plus_the_listed_additions():
    assert set(OURS) - set(THEIRS) == ADDED
    through_kwargs = set(THEIRS) - set(OURS)
    assert through_kwargs == set(REFUSED_OTHERWISE) | set(PASSED_THROUGH)
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD
               for p in inspect.signature(CBConv2D.__init__).parameters.values())
    # The two arguments every conv is called with positionally come first, as in larq.
    assert list(OURS)[:2] == list(THEIRS)[:2] == ["filters", "kernel_size"]


def test_positional_arguments_mean_what_they_mean_in_larq():
    """Every argument CBConv2D takes by position sits where QuantConv2D has it, and the
    additions are keyword-only, so ``CBConv2D(f, k, s)`` strides like ``QuantConv2D(f, k, s)``."""
    positional = [name for name, p in OURS.items()
                  if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert positional == list(THEIRS)[:len(positional)]
    assert {name for name, p in OURS.items() if p.kind is inspect.Parameter.KEYWORD_ONLY} >= ADDED
    ours, theirs = CBConv2D(2, 3, 2, "valid"), lq.layers.QuantConv2D(2, 3, 2, "valid")
    assert (ours.strides, ours.padding) == (theirs.strides, theirs.padding) == ((2, 2), "valid")
    with pytest.raises(TypeError):
        CBConv2D(2, 3, 1, "same", 1.0, 4)  # orientations is keyword-only


@pytest.mark.parametrize("name", sorted(set(THEIRS) & set(OURS)))
def test_shared_arguments_have_larqs_default_unless_listed(name):
    if name in CHANGED_DEFAULTS:
        # Still a difference: an entry whose default came back to larq's must go.
        assert OURS[name].default == CHANGED_DEFAULTS[name] != THEIRS[name].default
    else:
        assert OURS[name].default == THEIRS[name].default


def _config(cls, **kwargs):
    layer = cls(8, 3, **kwargs)
    layer.build((None, 8, 8, 4))
    return layer.get_config()


@pytest.mark.parametrize("name", sorted(set(REFUSED_OTHERWISE) | set(PASSED_THROUGH)))
def test_arguments_through_kwargs_default_as_in_larq(name):
    """Left out, an argument CBConv2D takes through **kwargs ends up as larq's default does."""
    assert _config(CBConv2D, orientations=4)[name] == _config(lq.layers.QuantConv2D)[name]


@pytest.mark.parametrize("name", sorted(PASSED_THROUGH))
def test_arguments_through_kwargs_reach_the_layer_as_in_larq(name):
    value = PASSED_THROUGH[name]
    extra = {"use_bias": True} if name.startswith("bias_") else {}
    ours = _config(CBConv2D, orientations=4, **{name: value}, **extra)
    theirs = _config(lq.layers.QuantConv2D, **{name: value}, **extra)
    assert ours[name] == theirs[name] != _config(lq.layers.QuantConv2D, **extra)[name]


@pytest.mark.parametrize("name", sorted(REFUSED_OTHERWISE))
def test_refused_arguments_are_accepted_at_larqs_default_only(name):
    default = THEIRS[name].default
    CBConv2D(2, 3, **{name: default})(tf.zeros((1, 8, 8, 4)))
    with pytest.raises(ValueError, match="CBConv2D supports"):
        CBConv2D(2, 3, **{name: REFUSED_OTHERWISE[name]})
