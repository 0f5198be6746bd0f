"""LCE latency of the quarter-turn invariant CBCN next to its plain twin: what the invariance costs.

For the two models of the invariance evidence (``benchmarks/reproduce.py --only invariance``):
LeNet at 28x28 (kernel stage 5-10-20-40, MNIST) and ResNet18 at 32x32 (kernel stage 4-4-8-16,
the CIFAR budget), both K = 4, the plain CBCN and the same model with
``invariant={"pool": "max"}`` (``invariant``, the orientation max-pool head) and with
``invariant={"pool": "align"}`` (``align``, the ORAlign head, what ``invariant=True`` gives)
are exported with LCE. Each invariant variant is timed side by
side with the plain model in one `cbcn_tf.converters.benchmark_tflite` call (every LCE kernel,
batch 1, configurations interleaved round-robin), so the pair sees the same load; its ratio
comes from that call, and the plain rows written are those of the first call. BOPs and float
FLOPs are `cbcn_tf.summary`'s; parity is each flatbuffer against its Keras model on seeded
random inputs (reported, not enforced: untrained binary nets amplify the
one-bit flips float rounding causes near zero).

The weights are untrained (random), which does not change the latency. This host is x86: LCE's
optimised kernels target ARM64 (README, 'Deploy to a phone').

Usage:
    python benchmarks/invariance_latency.py [--runs 50] [--threads 1] [--out benchmarks/results]

Writes ``invariance_latency.csv`` into --out (one row per model, variant and LCE kernel,
with the command that produced it); the .tflite files go to a temporary folder.
"""
import argparse
import csv
import io
import os
import shlex
import sys
import tempfile

import cbcn_tf  # noqa: F401  (Keras 2 first)
import tensorflow as tf

from cbcn_tf import files
from cbcn_tf.converters import benchmark_tflite, check_parity, export_lce
from cbcn_tf.models import create_model
from cbcn_tf.summary import summary as cbcn_summary

# name -> (zoo model, create_model kwargs, warm-up runs)
MODELS = {
    "lenet": ("cbcn_lenet", dict(input_shape=(28, 28, 1), num_classes=10,
                                 kernel_stage=(5, 10, 20, 40), orientations=4), 5),
    "resnet18": ("cbcn_resnet18", dict(input_shape=(32, 32, 3), num_classes=10,
                                       kernel_stage=(4, 4, 8, 16), orientations=4), 5),
}
VARIANTS = {"plain": False, "invariant": {"pool": "max"}, "align": {"pool": "align"}}
COLUMNS = ("model", "variant", "input", "kernel_stage", "runtime", "kernel", "threads", "runs",
           "warmup", "median_ms", "p90_ms", "min_ms", "ratio_to_plain", "bops", "flops",
           "lce_bytes", "parity", "load_average", "command")


def measure(key: str, runs: int, threads, folder: str, parity_samples: int) -> list:
    """Rows of COLUMNS (without load and command) for the plain ``key`` model and each
    invariant variant, every variant's ratio from its own run beside the plain model."""
    name, kwargs, warmup = MODELS[key]
    flatbuffers, info = {}, {}
    for variant in VARIANTS:
        tf.keras.utils.set_random_seed(0)
        model = create_model(name, invariant=VARIANTS[variant], **kwargs)
        result = export_lce(model, os.path.join(folder, f"{name}_{variant}.tflite"),
                            verify=False)
        flatbuffers[variant] = open(result.path, "rb").read()
        totals = cbcn_summary(model, print_fn=None).totals
        info[variant] = dict(bops=totals["binary_macs"], flops=totals["float_macs"],
                             lce_bytes=result.bytes,
                             parity=str(check_parity(model, flatbuffers[variant],
                                                     samples=parity_samples)))
    rows = []
    for i, variant in enumerate(list(VARIANTS)[1:]):  # each interleaved with the plain one
        labels = {"plain": f"{name} plain", variant: f"{name} {variant}"}
        report = benchmark_tflite(flatbuffers["plain"], baseline=flatbuffers[variant],
                                  runs=runs, warmup=warmup, threads=threads,
                                  name=labels["plain"], baseline_name=labels[variant])
        plain = {(m.kernel, m.threads): m.median_ms for m in report.rows
                 if m.model == labels["plain"]}
        for m in report.rows:
            measured = "plain" if m.model == labels["plain"] else variant
            if measured == "plain" and i:
                continue  # the plain rows of the first run only
            rows.append(dict(
                model=name, variant=measured, input="x".join(map(str, kwargs["input_shape"])),
                kernel_stage="-".join(map(str, kwargs["kernel_stage"])), runtime=m.runtime,
                kernel=m.kernel, threads=m.threads, runs=m.runs, warmup=m.warmup,
                median_ms=f"{m.median_ms:.3f}", p90_ms=f"{m.p90_ms:.3f}",
                min_ms=f"{m.min_ms:.3f}",
                ratio_to_plain=f"{m.median_ms / plain[(m.kernel, m.threads)]:.3f}",
                **info[measured]))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--parity-samples", type=int, default=4)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args(argv)
    command = shlex.join(["python", os.path.relpath(__file__), *(argv or sys.argv[1:])])
    os.makedirs(args.out, exist_ok=True)
    load = [os.getloadavg()[0]]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for key in args.models:
            rows += measure(key, args.runs, tuple(args.threads), folder, args.parity_samples)
    load.append(os.getloadavg()[0])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow(dict(row, load_average=f"{load[0]:.2f} / {load[1]:.2f}",
                             command=command))
    path = os.path.join(args.out, "invariance_latency.csv")
    files.write_text(path, buffer.getvalue())
    print(buffer.getvalue())
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
