"""Running a flatbuffer (LCE's or TFLite's interpreter) next to Keras on seeded random inputs."""
from __future__ import annotations

import dataclasses
import warnings

import larq_compute_engine as lce
import numpy as np
import tensorflow as tf

from cbcn_tf.errors import ExportError
from cbcn_tf.converters.flatbuffer import input_shapes


@dataclasses.dataclass(frozen=True)
class Parity:
    """Keras vs interpreter on seeded random inputs.

    ``sample_diffs[i]`` is ``max|converted - keras|`` over all outputs of sample ``i``; a sample
    matches when it is ``<= tolerance = atol + rtol * output_scale`` with ``output_scale`` the
    largest ``|keras output|``. ``ok`` means at most half the samples mismatch: a conversion
    error (a wrong pad, a mis-fused scale) is systematic and shows on every input, while a
    pre-sign activation within float rounding of zero flips one bit on one input only, which a
    deep binary net can amplify beyond any fixed tolerance.
    """

    sample_diffs: tuple
    output_scale: float
    tolerance: float

    @property
    def samples(self) -> int:
        return len(self.sample_diffs)

    @property
    def max_abs_diff(self) -> float:
        return max(self.sample_diffs)

    @property
    def mismatched(self) -> int:
        return sum(diff > self.tolerance for diff in self.sample_diffs)

    @property
    def ok(self) -> bool:
        return self.mismatched <= self.samples // 2

    def __str__(self) -> str:
        return (f"{self.samples - self.mismatched}/{self.samples} seeded random inputs within "
                f"{self.tolerance:.3g} (= atol + rtol * {self.output_scale:.3g}); worst "
                f"max|diff| = {self.max_abs_diff:.3g}")


class ParityWarning(UserWarning):
    """Some (at most half) of the parity samples differ beyond the tolerance."""


def random_inputs(shapes, samples: int, seed: int = 0) -> list:
    """Seeded standard-normal float32 inputs: one ``(samples, *shape[1:])`` array per input."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((samples, *shape[1:])).astype(np.float32) for shape in shapes]


def tflite_interpreter(flatbuffer: bytes, num_threads: int = 1) -> tf.lite.Interpreter:
    """``tf.lite.Interpreter`` (XNNPack for float ops) with tensors allocated."""
    with warnings.catch_warnings():  # its LiteRT migration notice; it still works in TF 2.21
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_content=flatbuffer, num_threads=num_threads)
    interpreter.allocate_tensors()
    return interpreter


def _run_lce(flatbuffer: bytes, inputs: list, num_threads: int) -> list:
    interpreter = lce.testing.Interpreter(flatbuffer, num_threads=num_threads)
    outputs = interpreter.predict(inputs if len(inputs) > 1 else inputs[0])
    return outputs if isinstance(outputs, list) else [outputs]


def _run_tflite(flatbuffer: bytes, inputs: list, num_threads: int) -> list:
    interpreter = tflite_interpreter(flatbuffer, num_threads)
    results = []
    for n in range(len(inputs[0])):
        for detail, array in zip(interpreter.get_input_details(), inputs):
            interpreter.set_tensor(detail["index"], array[n:n + 1])
        interpreter.invoke()
        results.append([interpreter.get_tensor(d["index"])
                        for d in interpreter.get_output_details()])
    return [np.concatenate(per_output) for per_output in zip(*results)]


def check_parity(model, flatbuffer: bytes, *, lce_runtime: bool = True, samples: int = 8,
                 seed: int = 0, rtol: float = 1e-3, atol: float = 1e-3,
                 num_threads: int = 1) -> Parity:
    """Compare ``model`` (Keras, inference mode) with ``flatbuffer`` run by an interpreter.

    ``lce_runtime`` selects LCE's interpreter (default kernels), else ``tf.lite.Interpreter``.
    Inputs are seeded standard-normal arrays of the flatbuffer's input shapes. Outputs are
    compared as they are (after any softmax: an interpreter exposes only the flatbuffer's
    outputs, not the logits inside), see :class:`Parity`.

    Example:
        >>> import cbcn_tf
        >>> from cbcn_tf.converters import lce_flatbuffer
        >>> x = tf.keras.Input((16, 16, 8))
        >>> model = tf.keras.Model(x, cbcn_tf.CBConv2D(8, 3, orientations=4)(x))
        >>> check_parity(model, lce_flatbuffer(model)).ok
        True
    """
    inputs = random_inputs(input_shapes(flatbuffer), samples, seed)
    run = _run_lce if lce_runtime else _run_tflite
    converted = run(flatbuffer, inputs, num_threads)
    expected = model(inputs if len(inputs) > 1 else inputs[0], training=False)
    expected = [np.asarray(t) for t in tf.nest.flatten(expected)]
    if [e.shape for e in expected] != [c.shape for c in converted]:
        raise ExportError(f"Keras outputs {[e.shape for e in expected]} and converted outputs "
                          f"{[c.shape for c in converted]} do not line up.")
    scale = max(float(np.max(np.abs(e))) for e in expected)
    diffs = np.max([np.abs(e - c).reshape(samples, -1).max(axis=1)
                    for e, c in zip(expected, converted)], axis=0)
    return Parity(tuple(float(d) for d in diffs), scale, atol + rtol * scale)
