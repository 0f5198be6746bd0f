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


def larq_table(model):
    """The per-layer table lq.models.summary prints, as {layer name: {column header: value}}
    (larq's own table data, before it is formatted)."""
    header, *rows = lq.models.ModelProfile(model).generate_table()
    return {row[0]: dict(zip(header, row)) for row in rows}


def test_larq_summary_counts_learned_one_bit_weights():
    """Larq sees W (3*3*(8/4)*4*4 = 288 entries), not E (1152): its 1-bit weight column holds
    W's entries and its 1-bit MACs are W's entries x 4*4 output pixels, 1/K of the BOPs
    cbcn_tf.summary counts with E."""
    model = _two_layer_model()
    stem, cb = model.layers[1:]
    table = larq_table(model)
    one_bit, floats, macs = "# 1-bit\nx 1", "# 32-bit\nx 1", "1-bit MACs"
    learned = 3 * 3 * (8 // 4) * 4 * 4
    assert (table[cb.name][one_bit], table[cb.name][floats]) == (learned, 0)
    assert table[cb.name][macs] == learned * 4 * 4
    assert table[cb.name][macs] * 4 == cbcn_tf.summary(model, print_fn=None).totals[
        "binary_macs"]
    assert (table[stem.name][one_bit], table[stem.name][floats]) == (0, 3 * 3 * 3 * 8)
    assert table[stem.name][macs] == 0  # the float stem's MACs are 32-bit ones


def test_summary_needs_built_model():
    with pytest.raises(ValueError, match="built model"):
        cbcn_tf.summary(tf.keras.Sequential([cbcn_tf.CBConv2D(2, 3)]), print_fn=None)
