"""The packaged LCE model of the MNIST CBCN: its op audit, and parity with Keras on real images.

Runs the packaged weights (``cbcn_lenet:mnist``) in Keras and the packaged LCE flatbuffer
(``models/weights/cbcn_lenet_mnist.tflite``, written by
``cbcn convert cbcn_lenet:mnist models/weights/cbcn_lenet_mnist.tflite``) in LCE's
interpreter on every MNIST test image, and writes ``benchmarks/results/pretrained_tflite.json``:
the op counts, top-1 of both, how often their top-1 agree and the largest probability
difference.

Usage:
    python benchmarks/pretrained_tflite.py --data-dir MNIST_IDX_FOLDER
"""
from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TFLITE = os.path.join(ROOT, "models", "weights", "cbcn_lenet_mnist.tflite")
OUT = os.path.join(HERE, "results", "pretrained_tflite.json")
CONVERT = "cbcn convert cbcn_lenet:mnist models/weights/cbcn_lenet_mnist.tflite"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder with the MNIST IDX files")
    args = parser.parse_args(argv)

    import numpy as np

    import cbcn_tf  # noqa: F401  (Keras 2 before anything touches tf.keras)
    from cbcn_tf import data as data_lib
    from cbcn_tf import files, training
    from cbcn_tf.converters.flatbuffer import audit_ops
    from cbcn_tf.converters.parity import _run_lce

    flatbuffer = open(TFLITE, "rb").read()
    model = training.load_model("cbcn_lenet:mnist")
    images, labels = [], []
    for x, y in data_lib.load_dataset("mnist", "test", batch_size=500, data_dir=args.data_dir):
        images.append(x.numpy())
        labels.append(y.numpy())
    images, labels = np.concatenate(images), np.concatenate(labels)
    keras = model.predict(images, batch_size=500, verbose=0)
    lce = _run_lce(flatbuffer, [images], num_threads=1)[0]
    agree = float(np.mean(keras.argmax(1) == lce.argmax(1)))
    result = dict(
        command=f"python benchmarks/pretrained_tflite.py --data-dir MNIST (after `{CONVERT}`)",
        images=int(len(labels)), bytes=len(flatbuffer), ops=audit_ops(flatbuffer).counts,
        keras_top1=float(np.mean(keras.argmax(1) == labels)),
        lce_top1=float(np.mean(lce.argmax(1) == labels)), top1_agreement=agree,
        max_abs_prob_diff=float(np.max(np.abs(keras - lce))))
    files.write_text(OUT, json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
