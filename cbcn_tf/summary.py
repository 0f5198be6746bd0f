"""Cost summary of CBCN models: what ``larq.models.summary`` cannot see.

Larq counts the stored (learned) 1-bit weights of a CBConv2D, but the deployed layer convolves
with the expanded kernel E, K times larger (docs/METHOD.md §2.3 and §6.7). This module reports
per layer:

- ``learned_binary_weights``: entries of W (what is trained and what Larq counts);
- ``deployed_binary_weights``: entries of sign(E) (what the exported model holds);
- ``binary_macs`` (BOPs): E entries x output pixels, for convolutions whose input and kernel
  are both binarised;
- ``float_macs`` (FLOPs, counted as multiply-accumulates): the same for float convs / dense;
- ``float_params``: every other parameter (biases, BN, PReLU, float convs), stored at 32 bits.

Memory compares the deployed binary model (1 bit per binary weight) with its full-precision
twin (the same weights at 32 bits).

Example:
    >>> import cbcn_tf, tensorflow as tf
    >>> x = tf.keras.Input((8, 8, 4))
    >>> model = tf.keras.Model(x, cbcn_tf.CBConv2D(2, 3, orientations=4)(x))
    >>> cbcn_tf.summary(model, print_fn=None).totals["binary_macs"]
    18432
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from cbcn_tf import files
from cbcn_tf.invariance import CirculantConv2D, LiftingConv2D
from cbcn_tf.layers import CBConv2D
from cbcn_tf.rewrite import is_binary_layer, iter_layers

COUNTS = ("binary_macs", "float_macs", "learned_binary_weights", "deployed_binary_weights",
          "float_params")


def _output_pixels(layer) -> int:
    shape = tf.TensorShape(layer.output.shape if hasattr(layer, "output") else layer.output_shape)
    return int(np.prod(shape[1:-1]))


def _layer_row(layer) -> dict:
    row = dict(name=layer.name, type=type(layer).__name__, **{key: 0 for key in COUNTS})
    kernel = getattr(layer, "kernel", None)
    other = sum(int(np.prod(w.shape)) for w in layer.weights if w is not kernel)
    if kernel is None:
        row["float_params"] = other
        return row
    learned = int(np.prod(kernel.shape))
    deployed = learned
    if isinstance(layer, (CBConv2D, CirculantConv2D, LiftingConv2D)):  # E, K x wider than W
        h, w = layer.kernel_size
        deployed = h * w * int(layer.input_spec.axes[-1]) * layer.filters
    macs_per_pixel = deployed
    is_conv = isinstance(layer, tf.keras.layers.Conv2D) or isinstance(
        layer, tf.keras.layers.DepthwiseConv2D)
    macs = macs_per_pixel * (_output_pixels(layer) if is_conv else 1)
    if is_binary_layer(layer):
        row.update(binary_macs=macs, learned_binary_weights=learned,
                   deployed_binary_weights=deployed, float_params=other)
    else:
        row.update(float_macs=macs, float_params=other + learned)
    return row


@dataclass
class ModelSummary:
    """Per-layer rows and totals; ``str()`` gives the table, ``to_csv`` writes it."""

    model_name: str
    rows: list = field(default_factory=list)

    @property
    def totals(self) -> dict:
        totals = {key: sum(row[key] for row in self.rows) for key in COUNTS}
        binary_bytes = totals["deployed_binary_weights"] / 8 + totals["float_params"] * 4
        twin_bytes = (totals["deployed_binary_weights"] + totals["float_params"]) * 4
        totals.update(binary_model_bytes=binary_bytes, float_twin_bytes=twin_bytes,
                      memory_saving=twin_bytes / binary_bytes if binary_bytes else 1.0)
        return totals

    def as_dict(self) -> dict:
        return {"model": self.model_name, "layers": list(self.rows), "totals": self.totals}

    def to_csv(self, path) -> None:
        """Write one row per layer plus a ``TOTAL`` row, atomically."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["name", "type", *COUNTS])
        writer.writeheader()
        writer.writerows(self.rows)
        writer.writerow({"name": "TOTAL", "type": "", **{k: self.totals[k] for k in COUNTS}})
        files.write_text(path, buffer.getvalue())

    def __str__(self) -> str:
        header = ("Layer", "Type", "BOPs", "FLOPs", "1-bit W (learned)", "1-bit W (deployed)",
                  "float params")
        lines = [header] + [
            (r["name"], r["type"], *(f"{r[k]:,}" for k in COUNTS)) for r in self.rows
            if any(r[k] for k in COUNTS)
        ]
        t = self.totals
        lines.append(("Total", "", *(f"{t[k]:,}" for k in COUNTS)))
        widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
        fmt = "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
        table = [fmt.format(*line) for line in lines]
        rule = "-" * len(table[0])
        return "\n".join([
            f"cbcn_tf summary: {self.model_name}", rule, table[0], rule, *table[1:-1], rule,
            table[-1], rule,
            f"Deployed binary model: {t['binary_model_bytes'] / 1024:,.2f} KiB "
            f"(1 bit per binary weight, 32 bits per float parameter)",
            f"Full-precision twin:   {t['float_twin_bytes'] / 1024:,.2f} KiB "
            f"-> {t['memory_saving']:.1f}x smaller",
        ])


def summary(model: tf.keras.Model, print_fn=print) -> ModelSummary:
    """BOPs, FLOPs, learned vs deployed 1-bit weights and memory of a built Keras model."""
    if not model.built:
        raise ValueError("cbcn_tf.summary needs a built model: call it on an input or build it.")
    result = ModelSummary(model.name, [_layer_row(layer) for layer in iter_layers(model)])
    if print_fn is not None:
        print_fn(str(result))
    return result
