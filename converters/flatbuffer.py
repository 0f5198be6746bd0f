"""Reading .tflite flatbuffers with the TFLite schema shipped with LCE: operators and inputs."""
from __future__ import annotations

import collections
import dataclasses
import re

from larq_compute_engine.mlir.python import tflite_schema

# Custom ops the LCE runtime registers; any other custom op (incl. Flex*) cannot run.
LCE_CUSTOM_OPS = frozenset({"LceBconv2d", "LceQuantize", "LceDequantize", "LceBMaxPool2d"})


_BUILTIN_NAMES = {
    code: name for name, code in vars(tflite_schema.BuiltinOperator).items()
    if not name.startswith("_")
}


@dataclasses.dataclass(frozen=True)
class OpAudit:
    """Operators of a TFLite flatbuffer (all subgraphs).

    ``ops`` is a list of ``(op_name, tensor_names)``: builtin ops by their schema name
    (``CONV_2D``), custom ops by their custom code (``LceBconv2d``, ``FlexSvd``).
    """

    ops: tuple

    @property
    def counts(self) -> dict:
        return dict(collections.Counter(name for name, _ in self.ops))

    @property
    def bconv_count(self) -> int:
        return self.counts.get("LceBconv2d", 0)

    @property
    def unsupported_ops(self) -> tuple:
        """Custom ops neither TFLite nor LCE implement (Flex / select-TF ops and the like)."""
        return tuple((name, tensors) for name, tensors in self.ops
                     if not name.isupper() and name not in LCE_CUSTOM_OPS)

    def ops_touching(self, layer_name: str, op_name: str) -> int:
        """How many ``op_name`` ops read or write a tensor of Keras layer ``layer_name``.

        Tensor names carry the layer scope (``model/cb1_binary/approx_sign/Sign``), possibly
        truncated, so a miss means "not found by name", not proof of absence.
        """
        pattern = re.compile(rf"(^|[/;]){re.escape(layer_name)}/")
        return sum(1 for name, tensors in self.ops
                   if name == op_name and any(pattern.search(t) for t in tensors))


def input_shapes(flatbuffer: bytes) -> list:
    """Shapes of the main subgraph's inputs, read from the flatbuffer without an interpreter."""
    graph = tflite_schema.Model.GetRootAsModel(flatbuffer, 0).Subgraphs(0)
    return [tuple(graph.Tensors(graph.Inputs(i)).ShapeAsNumpy())
            for i in range(graph.InputsLength())]


def audit_ops(flatbuffer: bytes) -> OpAudit:
    """Read the operators of a .tflite flatbuffer with the TFLite schema shipped with LCE.

    Example:
        >>> import cbcn_tf, tensorflow as tf
        >>> from cbcn_tf.converters import lce_flatbuffer
        >>> x = tf.keras.Input((16, 16, 8))
        >>> model = tf.keras.Model(x, cbcn_tf.CBConv2D(8, 3, orientations=4)(x))
        >>> audit = audit_ops(lce_flatbuffer(model))
        >>> audit.counts["LceBconv2d"], audit.unsupported_ops
        (1, ())
    """
    model = tflite_schema.Model.GetRootAsModel(flatbuffer, 0)
    ops = []
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for o in range(graph.OperatorsLength()):
            op = graph.Operators(o)
            code = model.OperatorCodes(op.OpcodeIndex())
            # Builtin codes >= 127 live in BuiltinCode(); older ones in the deprecated field.
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            name = (code.CustomCode().decode() if builtin == tflite_schema.BuiltinOperator.CUSTOM
                    else _BUILTIN_NAMES.get(builtin, f"BUILTIN_{builtin}"))
            indices = [op.Inputs(i) for i in range(op.InputsLength())] + [
                op.Outputs(i) for i in range(op.OutputsLength())]
            tensors = tuple(graph.Tensors(i).Name().decode() for i in indices if i >= 0)
            ops.append((name, tensors))
    return OpAudit(tuple(ops))
