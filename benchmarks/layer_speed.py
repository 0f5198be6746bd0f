"""Cost of the CiF expansion and CBP: CBConv2D against larq's QuantConv2D at equal channels.

Both layers binarise inputs and weights and convolve C_in*K -> C_out*K channels; the only
difference is that CBConv2D stores W (1/K of the kernel) and expands it on every call, with CBP
as the kernel gradient. Runs are interleaved (A, B, A, B, ...) so machine noise hits both
alike; the reported ratio is the median of per-round ratios.

Usage:
    python benchmarks/layer_speed.py [--rounds 15] [--batch 64] [--out benchmarks/results]
"""
import argparse
import os
import platform
import statistics
import sys
import time

import cbcn_tf  # noqa: F401  (Keras 2 first)
import larq as lq
import tensorflow as tf

from cbcn_tf import files
from cbcn_tf.layers import CBConv2D

CASES = [  # (input size, learned C_in, learned C_out, K)
    (32, 16, 16, 4),
    (32, 32, 32, 4),
    (56, 16, 16, 4),
    (56, 32, 32, 4),
]


def _layers(c_in, c_out, k):
    common = dict(padding="same", pad_values=1.0, input_quantizer="approx_sign",
                  kernel_quantizer="gaussian_sign", kernel_constraint="weight_clip",
                  use_bias=False)
    cbconv = CBConv2D(c_out, 3, orientations=k, scale="layer_mean", **common)
    quant = lq.layers.QuantConv2D(c_out * k, 3, **common)
    return cbconv, quant


def _steps(layer, x):
    optimizer = tf.keras.optimizers.SGD(0.01)
    layer(x)

    @tf.function
    def infer(x):
        return layer(x)

    @tf.function
    def train(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(layer(x)))
        grads = tape.gradient(loss, layer.trainable_weights)
        optimizer.apply_gradients(zip(grads, layer.trainable_weights))
        return loss

    return {"inference": infer, "train_step": train}


def _time(fn, x, repeats):
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn(x)
    _ = out.numpy()  # wait for the result
    return (time.perf_counter() - start) / repeats


def run(rounds, batch, repeats):
    rows = []
    for size, c_in, c_out, k in CASES:
        x = tf.random.normal((batch, size, size, c_in * k))
        cbconv, quant = _layers(c_in, c_out, k)
        steps = {"CBConv2D": _steps(cbconv, x), "QuantConv2D": _steps(quant, x)}
        for mode in ("inference", "train_step"):
            for name in steps:  # warm-up (tracing) for both
                _time(steps[name][mode], x, 2)
            times = {name: [] for name in steps}
            for _ in range(rounds):
                for name in steps:
                    times[name].append(_time(steps[name][mode], x, repeats))
            ratios = [a / b for a, b in zip(times["CBConv2D"], times["QuantConv2D"])]
            row = dict(input=f"{size}x{size}", channels=f"{c_in * k}->{c_out * k}", K=k,
                       mode=mode, batch=batch,
                       cbconv_ms=1e3 * statistics.median(times["CBConv2D"]),
                       quantconv_ms=1e3 * statistics.median(times["QuantConv2D"]),
                       median_ratio=statistics.median(ratios))
            rows.append(row)
            print(f"{row['input']:>7} {row['channels']:>9} {mode:>10}: CBConv2D "
                  f"{row['cbconv_ms']:8.1f} ms  QuantConv2D {row['quantconv_ms']:8.1f} ms  "
                  f"ratio {row['median_ratio']:.3f}", flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3, help="calls per timed sample")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", default=os.path.join("benchmarks", "results"))
    args = parser.parse_args(argv)
    rows = run(args.rounds, args.batch, args.repeats)
    os.makedirs(args.out, exist_ok=True)
    command = "python benchmarks/layer_speed.py " + " ".join(sys.argv[1:] if argv is None else argv)
    files.write_csv(os.path.join(args.out, "layer_speed.csv"), rows)
    lines = [
        f"Command: `{command.strip()}`  ",
        f"Host: {platform.machine()}, {os.cpu_count()} cores, TF {tf.__version__}; "
        f"interleaved rounds={args.rounds}, {args.repeats} calls per sample, median of "
        "per-round ratios.",
        "",
        "| input | channels (C_in*K -> C_out*K) | K | mode | CBConv2D ms | QuantConv2D ms | ratio |",
        "|---|---|---|---|---|---|---|",
        *(f"| {r['input']} | {r['channels']} | {r['K']} | {r['mode']} | {r['cbconv_ms']:.1f} | "
          f"{r['quantconv_ms']:.1f} | {r['median_ratio']:.3f} |" for r in rows),
        "",
        f"Worst ratio: {max(r['median_ratio'] for r in rows):.3f} (goal <= 1.10).",
    ]
    files.write_text(os.path.join(args.out, "layer_speed.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
