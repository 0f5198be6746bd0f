"""cbcn_tf.summary against a hand count, and larq's summary on CBCN layers."""
import csv

import larq as lq
import pytest
import tensorflow as tf

import cbcn_tf


def _two_layer_model(tied=False):
    x = tf.keras.Input((8, 8, 3))
    y = tf.keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(x)  # float stem
    y = cbcn_tf.CBConv2D(4, 3, orientations=4, strides=2, tied=tied)(y)  # 8 -> 16 channels
    return tf.keras.Model(x, y)


def test_summary_matches_hand_count(tmp_path):
    s = cbcn_tf.summary(_two_layer_model(), print_fn=None)
    stem, cb = s.rows[1], s.rows[2]
    # stem: 3*3*3*8 = 216 float weights, 8*8 output pixels
    assert stem["float_macs"] == 216 * 64 and stem["float_params"] == 216
    # CBConv: W = 3*3*(8/4)*4*4 = 288 learned; E = 3*3*8*16 = 1152 deployed; 4*4 output pixels
    assert cb["learned_binary_weights"] == 288
    assert cb["deployed_binary_weights"] == 1152
    assert cb["binary_macs"] == 1152 * 16 == 4 * 288 * 16
    totals = s.totals
    assert totals["binary_model_bytes"] == 1152 / 8 + 216 * 4
    assert totals["float_twin_bytes"] == (1152 + 216) * 4
    assert totals["memory_saving"] == pytest.approx(5472 / 1008)
    path = tmp_path / "summary.csv"
    s.to_csv(path)
    rows = list(csv.DictReader(open(path)))
    assert rows[-1]["name"] == "TOTAL" and int(rows[-1]["binary_macs"]) == 1152 * 16
    assert "5.4x smaller" in str(s)


def test_tied_counts_fewer_learned_weights_same_deployed():
    cb = cbcn_tf.summary(_two_layer_model(tied=True), print_fn=None).rows[2]
    assert cb["learned_binary_weights"] == 3 * 3 * 2 * 4
    assert cb["deployed_binary_weights"] == 1152


def test_larq_summary_counts_learned_one_bit_weights():
    lines = []
    lq.models.summary(_two_layer_model(), print_fn=lines.append)
    text = "\n".join(lines)
    cb_line = next(line for line in text.splitlines() if "cb_conv2d" in line)
    assert " 288 " in cb_line  # 1-bit column: W's entries, not E's


def test_summary_needs_built_model():
    with pytest.raises(ValueError, match="built model"):
        cbcn_tf.summary(tf.keras.Sequential([cbcn_tf.CBConv2D(2, 3)]), print_fn=None)
