"""Latency of exported CBCN ResNet18s: best LCE kernel against the float twin on XNNPack.

For each model, the LCE flatbuffer runs on LCE's interpreter (default, indirect-bgemm and
reference binary kernels; 1 and 2 threads) and the full-precision twin (``binary=False``, the
same topology and widths with float convs) on ``tf.lite.Interpreter`` with XNNPack, all
configurations interleaved round-robin. The headline ratio is best LCE kernel, 1 thread, over
float XNNPack, 1 thread (goal <= 0.8).

The weights are untrained (random), which does not change the latency. This host is x86: LCE's
optimised kernels target ARM64, so measure a phone with lce_benchmark_model (README, 'Deploy to a phone').

Usage:
    python benchmarks/lce_latency.py [--models cifar imagenet] [--cifar-runs 50]
        [--imagenet-runs 10] [--out benchmarks/results]

Writes lce_latency.csv / .json / .md into --out; the .tflite files go to a temporary folder.
"""
import argparse
import dataclasses
import json
import os
import shlex
import sys
import tempfile

import cbcn_tf  # noqa: F401  (Keras 2 first)
import tensorflow as tf

from cbcn_tf.converters import (BenchmarkReport, benchmark_tflite, check_parity, export_lce,
                                export_tflite)
from cbcn_tf.models import create_model

GOAL_RATIO = 0.8
# name -> (zoo model, create_model kwargs, warm-up runs)
BENCHMARKS = {
    "cifar": ("cbcn_resnet18", dict(input_shape=(32, 32, 3), num_classes=10), 5),
    "imagenet": ("cbcn_resnet18_imagenet", dict(input_shape=(224, 224, 3), num_classes=1000), 2),
}


def run_benchmark(key: str, runs: int, threads, folder: str, parity_samples: int) -> dict:
    name, kwargs, warmup = BENCHMARKS[key]
    tf.keras.utils.set_random_seed(0)
    binary, twin = create_model(name, **kwargs), create_model(name, binary=False, **kwargs)
    # Parity is reported rather than enforced: an untrained deep binary net amplifies the
    # one-bit flips that float rounding causes near zero (see cbcn_tf.converters.Parity).
    lce_result = export_lce(binary, os.path.join(folder, f"{name}.tflite"), verify=False)
    float_result = export_tflite(twin, os.path.join(folder, f"{name}_float.tflite"),
                                 verify=False)
    lce_bytes = open(lce_result.path, "rb").read()
    float_bytes = open(float_result.path, "rb").read()
    parity = {
        "lce": str(check_parity(binary, lce_bytes, samples=parity_samples)),
        "float": str(check_parity(twin, float_bytes, lce_runtime=False, samples=parity_samples)),
    }
    del binary, twin
    lce_name, float_name = f"{name} (LCE)", f"{name}_float (float twin)"
    report = benchmark_tflite(lce_bytes, baseline=float_bytes, runs=runs, warmup=warmup,
                              threads=threads, name=lce_name, baseline_name=float_name)
    best_lce, best_float = report.best(lce_name, 1), report.best(float_name, 1)
    return {
        "model": name,
        "input_shape": list(kwargs["input_shape"]),
        "lce_bytes": lce_result.bytes,
        "float_bytes": float_result.bytes,
        "lce_ops": lce_result.ops,
        "parity": parity,
        "best_lce_1_thread": dataclasses.asdict(best_lce),
        "float_xnnpack_1_thread": dataclasses.asdict(best_float),
        "ratio": best_lce.median_ms / best_float.median_ms,
        "report": report,
    }


def markdown(command: str, results: list, report: BenchmarkReport, load: list) -> str:
    lines = [f"Command: `{command}`", "", "# LCE latency on this host", "",
             "| model | input | best LCE kernel, 1 thread | float XNNPack, 1 thread | ratio "
             f"(goal <= {GOAL_RATIO}) | LCE file | float file |",
             "|---|---|---|---|---:|---:|---:|"]
    for r in results:
        lce, flt = r["best_lce_1_thread"], r["float_xnnpack_1_thread"]
        verdict = "met" if r["ratio"] <= GOAL_RATIO else "not met"
        lines.append(
            f"| {r['model']} | {'x'.join(map(str, r['input_shape']))} | {lce['kernel']}: "
            f"{lce['median_ms']:.1f} ms | {flt['median_ms']:.1f} ms | {r['ratio']:.2f} "
            f"({verdict}) | {r['lce_bytes'] / 2**20:.2f} MiB | {r['float_bytes'] / 2**20:.2f} MiB "
            f"(x{r['float_bytes'] / r['lce_bytes']:.1f}) |")
    lines += ["", "Median latency, batch 1. Untrained weights (latency does not depend on them). "
              f"Host load average (1 min) before / after: {load[0]:.2f} / {load[1]:.2f}; other "
              "jobs on the same cores slow the 2-thread runs most."]
    lines += ["", "## All configurations", "", report.to_markdown(), "", "## Parity", ""]
    lines += [f"- {r['model']}: LCE {r['parity']['lce']}; float twin {r['parity']['float']}"
              for r in results]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=sorted(BENCHMARKS),
                        default=["cifar", "imagenet"])
    parser.add_argument("--cifar-runs", type=int, default=50)
    parser.add_argument("--imagenet-runs", type=int, default=10,
                        help="few: each float-twin run at 224x224 takes about a second here")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--parity-samples", type=int, default=4)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args(argv)
    command = shlex.join([os.path.relpath(sys.executable), os.path.relpath(__file__),
                          *sys.argv[1:]])
    os.makedirs(args.out, exist_ok=True)

    results, load = [], [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as folder:
        for key in args.models:
            runs = args.cifar_runs if key == "cifar" else args.imagenet_runs
            results.append(run_benchmark(key, runs, tuple(args.threads), folder,
                                         args.parity_samples))
            print(results[-1]["report"].to_markdown(), flush=True)
    load.append(os.getloadavg()[0])
    report = BenchmarkReport(sum((r["report"].rows for r in results), ()),
                             results[0]["report"].host)
    summary = [{k: v for k, v in r.items() if k != "report"} for r in results]

    stem = os.path.join(args.out, "lce_latency")
    report.to_csv(stem + ".csv")
    with open(stem + ".json", "w", encoding="utf-8") as handle:
        json.dump({"command": command, "goal_ratio": GOAL_RATIO, "load_average": load,
                   "results": summary, **report.as_dict()}, handle, indent=2)
        handle.write("\n")
    text = markdown(command, summary, report, load)
    with open(stem + ".md", "w", encoding="utf-8") as handle:
        handle.write(text)
    print(text)


if __name__ == "__main__":
    main()
