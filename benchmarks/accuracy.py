"""Reproduce the paper's orderings on real data (SPEC 6): CBCN vs XNOR vs full precision.

Every arm gets the same recipe and budget: SGD Nesterov momentum 0.9, lr 0.1 with the CIFAR
recipe's x0.2 steps at 30% / 60% / 80% of the epochs (60/120/160 of 200, scaled), weight decay
5e-4, batch 128, the recipe's augmentation. Validation accuracy is measured on a fixed, seeded
held-out split; rotated accuracy on the same images rotated uniformly in [0, 360) degrees
(CIFAR10-rot) or [-45, 45] (digits, MNIST-rot); training images stay upright unless
``--rotate-train`` rotates them too (the paper's protocol, SPEC 5).

Arms: cbcn_k4 (Gaussian sign grad), cbcn_k4_approxsign, cbcn_k2, cbcn_k1, xnor (two binary convs
per block) and xnor_doubled (one per shortcut) at the CBCN K=4 feature widths, and fp (the
CBCN K=4 model's full-precision twin).

Usage (results and plots go to --out, one CSV row per arm written as soon as it finishes):
    python benchmarks/accuracy.py --dataset cifar10 --epochs 3 --kernel-stage 4,4,8,16
    python benchmarks/accuracy.py --dataset digits --epochs 30 --kernel-stage 4,4,8,16
    python benchmarks/accuracy.py --dataset digits --epochs 30 --rotate-train   # rotated protocol
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import cbcn_tf  # noqa: F401  (Keras 2 first)
import matplotlib
import tensorflow as tf

from cbcn_tf import converters, data, files
from cbcn_tf.models import create_model

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CIFAR = os.path.join(HERE, "..", "..", "shared", "datasets", "cifar10")

ARMS = {  # name -> (model name, extra kwargs); widths follow from kernel_stage and K = 4
    "cbcn_k4": ("cbcn_resnet18", dict(orientations=4)),
    "cbcn_k4_approxsign": ("cbcn_resnet18", dict(orientations=4, kernel_quantizer="approx_sign")),
    "cbcn_k2": ("cbcn_resnet18", dict(orientations=2)),
    "cbcn_k1": ("cbcn_resnet18", dict(orientations=1)),
    "xnor": ("xnor_resnet18", dict(orientations=4)),
    "xnor_doubled": ("xnor_resnet18_doubled", dict(orientations=4)),
    "fp": ("cbcn_resnet18", dict(orientations=4, binary=False)),
}


def _datasets(args):
    if args.dataset == "digits":
        name, kw = "digits", {}
        splits = ("train", "test")
    else:
        name, kw = "image_folder", dict(data_dir=args.data, validation_fraction=0.1)
        splits = ("train", "validation")
    train = data.load_dataset(name, splits[0], training=True, batch_size=args.batch,
                              seed=args.seed, cache=True, rotate=args.rotate_train, **kw)
    val = data.load_dataset(name, splits[1], batch_size=256, cache=True, **kw)
    val_rot = data.load_dataset(name, splits[1], batch_size=256, rotate=True, seed=args.seed,
                                cache=True, **kw)
    info = data.dataset_info(name, **({"data_dir": args.data} if args.dataset != "digits" else {}))
    return info, train, val, val_rot, splits[1]


def _schedule(epochs, base_lr=0.1):
    milestones = [round(epochs * f) for f in (0.3, 0.6, 0.8)]

    def lr(epoch, _):
        return base_lr * 0.2 ** sum(epoch >= m for m in milestones if m > 0)

    return lr


def _tflite_bytes(model, binary):
    """Size of the deployed file: LCE for binary models, plain TFLite for the float twin."""
    convert = converters.lce_flatbuffer if binary else converters.tflite_flatbuffer
    try:
        return len(convert(model))
    except ValueError as exc:  # report, don't lose the accuracy run
        print(f"  export failed: {exc}", flush=True)
        return None


def run_arm(arm, args, info, train, val, val_rot):
    model_name, extra = ARMS[arm]
    tf.keras.utils.set_random_seed(args.seed)
    model = create_model(model_name, input_shape=info.input_shape, num_classes=info.num_classes,
                         kernel_stage=args.kernel_stage, **extra)
    model.compile(
        optimizer=tf.keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=5e-4),
        loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.time()
    history = model.fit(train, validation_data=val, epochs=args.epochs, verbose=2,
                        callbacks=[tf.keras.callbacks.LearningRateScheduler(
                            _schedule(args.epochs))])
    seconds_per_epoch = (time.time() - start) / args.epochs
    _, val_acc = model.evaluate(val, verbose=0)
    _, rot_acc = model.evaluate(val_rot, verbose=0)
    costs = cbcn_tf.summary(model, print_fn=None).totals
    binary = costs["deployed_binary_weights"] > 0
    row = dict(
        arm=arm, model=model_name, kernel_stage="-".join(map(str, args.kernel_stage)),
        K=extra.get("orientations"), kernel_quantizer=extra.get(
            "kernel_quantizer", "gaussian_sign" if model_name.startswith("cbcn") and binary
            else ("magnitude_aware_sign" if binary else "float")),
        epochs=args.epochs, val_acc=round(val_acc, 4), rotated_val_acc=round(rot_acc, 4),
        bops=costs["binary_macs"], flops=costs["float_macs"],
        learned_1bit=costs["learned_binary_weights"],
        deployed_1bit=costs["deployed_binary_weights"], float_params=costs["float_params"],
        tflite_bytes=_tflite_bytes(model, binary),
        seconds_per_epoch=round(seconds_per_epoch, 1),
    )
    return row, {k: [float(v) for v in vals] for k, vals in history.history.items()}, model


def _stem(args):
    return f"accuracy_{args.dataset}" + ("_rotated_train" if args.rotate_train else "")


def _save(rows, histories, args):
    prefix = os.path.join(args.out, _stem(args))

    files.write_csv(prefix + ".csv", rows)
    files.write_text(prefix + "_histories.json",
                     json.dumps({"command": args.command, "histories": histories}, indent=1))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm, hist in histories.items():
        ax.plot(range(1, len(hist["val_accuracy"]) + 1), hist["val_accuracy"], marker="o",
                label=arm)
    ax.set(xlabel="epoch", ylabel="validation accuracy", title=f"{args.dataset}: validation "
           f"accuracy, kernel stage {'-'.join(map(str, args.kernel_stage))}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    files.atomic_write(prefix + "_curves.png", lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for row in rows:
        ax.scatter(max(row["bops"], 1), row["val_acc"], s=40)
        ax.annotate(row["arm"], (max(row["bops"], 1), row["val_acc"]), fontsize=8,
                    xytext=(4, 2), textcoords="offset points")
    ax.set(xscale="log", xlabel="BOPs (binary MACs; fp arm plotted at 1)",
           ylabel="validation accuracy", title=f"{args.dataset}: accuracy vs BOPs")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    files.atomic_write(prefix + "_vs_bops.png", lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)


def plot_filter_copies(model, path):
    """One learned filter's K binary circulant copies (output orientations 0..K-1)."""
    layer = next(layer for layer in model.layers if isinstance(layer, cbcn_tf.CBConv2D))
    k = layer.orientations
    sign_e = layer.expanded_kernel(quantized=True).numpy()  # (3, 3, C_in*K, C_out*K)
    fig, axes = plt.subplots(k, k, figsize=(1.6 * k, 1.6 * k + 0.4))
    for r in range(k):  # output orientation r of learned filter 0
        for q in range(k):  # input orientation plane q of input channel 0
            ax = axes[r][q]
            ax.imshow(sign_e[:, :, q, r], cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"in orient. {q}", fontsize=7)
            if q == 0:
                ax.set_ylabel(f"copy r={r}", fontsize=7)
    fig.suptitle(f"{layer.name}: sign(E) of learned filter 0, input channel 0", fontsize=8)
    fig.tight_layout()
    files.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("cifar10", "digits"), default="cifar10")
    parser.add_argument("--data", default=DEFAULT_CIFAR, help="CIFAR-10 ImageFolder root")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--kernel-stage", default="4,4,8,16")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rotate-train", action="store_true",
                        help="train on rotated images too (the paper's rotated protocol)")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    args = parser.parse_args(argv)
    args.kernel_stage = tuple(int(v) for v in args.kernel_stage.split(","))
    args.command = "python benchmarks/accuracy.py " + " ".join(sys.argv[1:] if argv is None
                                                               else argv)
    unknown = set(args.arms.split(",")) - set(ARMS)
    if unknown:
        parser.error(f"unknown arms {sorted(unknown)}; choose from {list(ARMS)}")
    os.makedirs(args.out, exist_ok=True)
    info, train, val, val_rot, split = _datasets(args)
    rows, histories = [], {}
    for arm in args.arms.split(","):
        print(f"== {arm} ({args.dataset}, {args.epochs} epochs)", flush=True)
        row, history, model = run_arm(arm, args, info, train, val, val_rot)
        rows.append(row)
        histories[arm] = history
        _save(rows, histories, args)
        if arm == "cbcn_k4":
            plot_filter_copies(model, os.path.join(args.out, _stem(args) + "_cif.png"))
        print("  " + json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
