"""LCE / TFLite export and on-host latency measurement (imported as cbcn_tf.converters).

By stage: `materialize` (CBConv2D -> binary conv holding sign(E) + ChannelScale), `flatbuffer`
(reading a .tflite's ops and inputs), `parity` (interpreter vs Keras), `export` (the checked
export pipeline and size report), `benchmark` (latency).

Example:
    >>> import os, tempfile
    >>> import cbcn_tf, tensorflow as tf
    >>> from cbcn_tf.converters import export_lce
    >>> x = tf.keras.Input((16, 16, 8))
    >>> model = tf.keras.Model(x, cbcn_tf.CBConv2D(8, 3, orientations=4)(x))
    >>> path = os.path.join(tempfile.mkdtemp(), "cbconv.tflite")
    >>> export_lce(model, path).ops["LceBconv2d"]
    1
"""
from cbcn_tf.converters.benchmark import KERNELS, BenchmarkReport, Measurement, benchmark_tflite
from cbcn_tf.converters.export import (
    ExportResult,
    FloatFallbackWarning,
    SizeReport,
    check_exportable,
    export_lce,
    export_tflite,
    lce_flatbuffer,
    size_report,
    tflite_flatbuffer,
)
from cbcn_tf.converters.flatbuffer import OpAudit, audit_ops, input_shapes
from cbcn_tf.converters.materialize import ChannelScale, materialize_cbconv
from cbcn_tf.converters.parity import (
    Parity,
    ParityWarning,
    check_parity,
    random_inputs,
    tflite_interpreter,
)

__all__ = [
    "KERNELS", "BenchmarkReport", "ChannelScale", "ExportResult", "FloatFallbackWarning",
    "Measurement", "OpAudit", "Parity", "ParityWarning", "SizeReport", "audit_ops",
    "benchmark_tflite", "check_exportable", "check_parity", "export_lce", "export_tflite",
    "input_shapes", "lce_flatbuffer", "materialize_cbconv", "random_inputs", "size_report",
    "tflite_flatbuffer", "tflite_interpreter",
]
