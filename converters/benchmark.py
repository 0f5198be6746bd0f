"""Latency of .tflite models on this host: LCE kernels against float TFLite + XNNPack.

Numbers measured here come from x86 builds of the kernels. LCE's optimised binary kernels
target ARM64 (phones, Raspberry Pi); on x86 they are much slower relative to float XNNPack, so
an x86 ratio says little about a phone. Measure on the device with LCE's ``lce_benchmark_model``
binary (README, 'Deploy to a phone') and report the kernel and thread count with every number.

Configurations run round-robin (one invocation each per round, starting position rotated every
round) after a warm-up, so drift of the host (other jobs, frequency scaling) hits all alike.

Example (the timings differ from run to run and host to host):
    >>> import os, tempfile
    >>> import cbcn_tf, tensorflow as tf
    >>> from cbcn_tf.converters import benchmark_tflite, export_lce
    >>> x = tf.keras.Input((16, 16, 8))
    >>> path = os.path.join(tempfile.mkdtemp(), "cbconv.tflite")
    >>> _ = export_lce(tf.keras.Model(x, cbcn_tf.CBConv2D(8, 3, orientations=4)(x)), path)
    >>> report = benchmark_tflite(path, runs=20, warmup=2)
    >>> print(report.to_markdown())
    | model | runtime | kernel | threads | runs | median ms | p90 ms | min ms |
    |---|---|---|---:|---:|---:|---:|---:|
    | model | lce | default | 1 | 20 | ...
    ...
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import platform
import time

import larq_compute_engine as lce
import numpy as np

from cbcn_tf import files
from cbcn_tf.converters.flatbuffer import audit_ops, input_shapes
from cbcn_tf.converters.parity import random_inputs, tflite_interpreter
from cbcn_tf.errors import ExportError

KERNELS = ("default", "indirect_bgemm", "reference")
X86_CAVEAT = (
    "Measured on {machine} with {cpus} CPUs. LCE's optimised binary kernels target ARM64: "
    "timings on an x86 host are not those of a phone (x86 kernels are not ARM's). Measure on "
    "the device with lce_benchmark_model (README, 'Deploy to a phone')."
)


@dataclasses.dataclass(frozen=True)
class Measurement:
    """Latency of one configuration, in milliseconds per batch-1 invocation."""

    model: str
    runtime: str  # "lce" or "tflite+xnnpack"
    kernel: str  # an entry of KERNELS for "lce", "xnnpack" otherwise
    threads: int
    runs: int
    warmup: int
    median_ms: float
    p90_ms: float
    min_ms: float


@dataclasses.dataclass(frozen=True)
class BenchmarkReport:
    """Rows of :class:`Measurement` plus the host they were measured on.

    Reports of one host concatenate: ``BenchmarkReport(a.rows + b.rows, a.host)``.
    """

    rows: tuple
    host: str

    def best(self, model: str, threads: int = 1) -> Measurement:
        """The fastest (median) configuration of ``model`` at ``threads``."""
        rows = [r for r in self.rows if r.model == model and r.threads == threads]
        if not rows:
            raise KeyError(f"No measurement of {model!r} with {threads} thread(s).")
        return min(rows, key=lambda r: r.median_ms)

    def as_dict(self) -> dict:
        return {"host": self.host, "caveat": X86_CAVEAT.format(**_host()),
                "rows": [dataclasses.asdict(r) for r in self.rows]}

    def to_json(self, path) -> None:
        files.write_text(path, json.dumps(self.as_dict(), indent=2) + "\n")

    def to_csv(self, path) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=[f.name for f in dataclasses.fields(
            Measurement)])
        writer.writeheader()
        writer.writerows(dataclasses.asdict(r) for r in self.rows)
        files.write_text(path, buffer.getvalue())

    def to_markdown(self) -> str:
        lines = ["| model | runtime | kernel | threads | runs | median ms | p90 ms | min ms |",
                 "|---|---|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r.model} | {r.runtime} | {r.kernel} | {r.threads} | {r.runs} "
                  f"| {r.median_ms:.2f} | {r.p90_ms:.2f} | {r.min_ms:.2f} |" for r in self.rows]
        lines += ["", "Batch 1; configurations interleaved round-robin after warm-up. "
                  + X86_CAVEAT.format(**_host())]
        return "\n".join(lines)


def _host() -> dict:
    return {"machine": platform.machine() or "unknown", "cpus": os.cpu_count()}


def _read(model) -> bytes:
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    return read_tflite(model)


def read_tflite(path, *, purpose: str = "benchmark", error=None) -> bytes:
    """The bytes of the .tflite file at ``path``, checked with TFLite's flatbuffer verifier.

    A missing, truncated, damaged or non-TFLite file raises a `cbcn_tf.errors.CbcnError`
    naming it (never a parser error deep inside the benchmark): ``error`` (default
    `ExportError`) saying "Cannot ``purpose`` PATH".
    """
    import warnings

    import tensorflow as tf

    from cbcn_tf.errors import MissingFileError

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingFileError(f"No .tflite file at {path}; write one with `cbcn convert`.")
    with open(path, "rb") as handle:
        data = handle.read()
    problem = None
    if data[4:8] != b"TFL3":
        problem = "it is not a TFLite flatbuffer (no TFL3 identifier)"
    else:
        try:  # builds the model with verification; LCE's custom ops are not needed for that
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tf.lite.Interpreter(model_content=data)
        except ValueError as exc:
            problem = f"it is truncated or damaged ({' '.join(str(exc).split())})"
    if problem:
        raise (error or ExportError)(f"Cannot {purpose} {path}: {problem}. Export it again "
                                     "with `cbcn convert RUN FILE.tflite`.")
    return data


def _lce_runner(flatbuffer: bytes, kernel: str, threads: int, inputs: list):
    interpreter = lce.testing.Interpreter(
        flatbuffer, num_threads=threads, use_indirect_bgemm=kernel == "indirect_bgemm",
        use_reference_bconv=kernel == "reference")
    return lambda: interpreter.interpreter.predict(inputs)


def _xnnpack_runner(flatbuffer: bytes, threads: int, inputs: list):
    interpreter = tflite_interpreter(flatbuffer, threads)
    input_details = interpreter.get_input_details()
    output_details = interpreter.get_output_details()

    def run():
        for detail, array in zip(input_details, inputs):
            interpreter.set_tensor(detail["index"], array)
        interpreter.invoke()
        return [interpreter.get_tensor(detail["index"]) for detail in output_details]

    return run


def _configurations(name: str, flatbuffer: bytes, threads, kernels, seed: int) -> list:
    inputs = random_inputs(input_shapes(flatbuffer), 1, seed)
    if any(op.startswith("Lce") for op in audit_ops(flatbuffer).counts):
        return [(name, "lce", kernel, n, _lce_runner(flatbuffer, kernel, n, inputs))
                for kernel in kernels for n in threads]
    return [(name, "tflite+xnnpack", "xnnpack", n, _xnnpack_runner(flatbuffer, n, inputs))
            for n in threads]


def check_settings(*, runs: int = 50, warmup: int = 5, threads=(1, 2),
                   kernels=KERNELS) -> None:
    """Raise `ExportError` for benchmark settings that cannot be measured as stated.

    A thread count must be 1 or more: TFLite runs 0 threads as 1 and -1 as a number of its own
    choosing, so the report's thread column would not say what ran.

    Example:
        >>> check_settings(threads=(0,))
        Traceback (most recent call last):
        ...
        cbcn_tf.errors.ExportError: threads (--threads) must be 1 or more, got 0: TFLite runs 0 as 1 thread and -1 as a number of its own choosing; e.g. --threads 1 2.
    """
    unknown = set(kernels) - set(KERNELS)
    if unknown:
        raise ExportError(f"Unknown kernels {sorted(unknown)}; use a subset of {KERNELS}.")
    if runs < 1 or warmup < 0:
        raise ExportError(f"runs must be 1 or more and warmup 0 or more (--runs N --warmup M), "
                          f"got runs={runs}, warmup={warmup}.")
    bad = [n for n in threads if isinstance(n, bool) or not isinstance(n, (int, np.integer))
           or n < 1]
    if bad or not threads:
        got = ", ".join(map(str, bad)) if bad else "none"
        raise ExportError(f"threads (--threads) must be 1 or more, got {got}: TFLite runs 0 as "
                          "1 thread and -1 as a number of its own choosing; e.g. --threads 1 2.")


def benchmark_tflite(model, *, runs: int = 50, warmup: int = 5, threads=(1, 2),
                     kernels=KERNELS, baseline=None, name: str = "model",
                     baseline_name: str = "float twin", seed: int = 0) -> BenchmarkReport:
    """Median and p90 latency of a .tflite model (path or bytes) on this host.

    An LCE model (one with Lce* ops) runs on LCE's interpreter with each of ``kernels``
    ("default": LCE's optimised bgemm, "indirect_bgemm", "reference") at each thread count; a
    plain model runs on ``tf.lite.Interpreter`` with XNNPack. ``baseline`` (e.g. the float
    twin's .tflite) is measured the same way, interleaved with ``model``'s configurations.

    Example (a CBCN against its full-precision twin, both as flatbuffer bytes):
        >>> from cbcn_tf.converters import lce_flatbuffer, tflite_flatbuffer
        >>> from cbcn_tf.models import create_model
        >>> kwargs = dict(input_shape=(16, 16, 1), orientations=2)
        >>> cbcn = lce_flatbuffer(create_model("cbcn_lenet", **kwargs))
        >>> twin = tflite_flatbuffer(create_model("cbcn_lenet", binary=False, **kwargs))
        >>> report = benchmark_tflite(cbcn, baseline=twin, runs=30)
        >>> speedup = report.best("float twin").median_ms / report.best("model").median_ms
        >>> sorted({row.model for row in report.rows})
        ['float twin', 'model']
    """
    check_settings(runs=runs, warmup=warmup, threads=threads, kernels=kernels)
    configs = _configurations(name, _read(model), threads, kernels, seed)
    if baseline is not None:
        configs += _configurations(baseline_name, _read(baseline), threads, kernels, seed)
    for *_, run in configs:
        for _ in range(warmup):
            run()
    timings = [[] for _ in configs]
    for round_index in range(runs):
        for offset in range(len(configs)):
            i = (round_index + offset) % len(configs)
            start = time.perf_counter()
            configs[i][-1]()
            timings[i].append((time.perf_counter() - start) * 1e3)
    rows = tuple(
        Measurement(*config[:4], runs, warmup, float(np.median(t)),
                    float(np.percentile(t, 90)), float(np.min(t)))
        for config, t in zip(configs, timings)
    )
    return BenchmarkReport(rows, "{machine}, {cpus} CPUs".format(**_host()))
