"""Every ``cbcn`` command in the shell blocks of README.md and docs/*.md runs as written.

Each ```bash / ```sh block is parsed; every line that runs ``cbcn`` is run in a subprocess
with the installed console script, in order, in one scratch folder per document, with only
size-reducing changes:

* ``cbcn train``: ``--set epochs=1 --set steps_per_epoch=2`` (``epochs=2`` with ``--resume``,
  so it continues), global batches above 16 lowered to 16, and a dataset TFDS would download
  (CIFAR-10, ImageNet) replaced by a local copy: 8 + 4 images per class of
  ``$CBCN_DATA/cifar10/train`` (random images without it) as an image folder;
  The ImageNet recipe's net is built at a quarter of its widths (``kernel_stage``).
* ``cbcn benchmark``: ``--runs 2 --warmup 1 --threads 1``; ``cbcn demo``: ``--epochs 1``
  (into a folder holding an earlier demo run and a user's notes: the notes must survive, and
  the LCE export must hold one LceBconv2d per binary conv); ``cbcn predict``: the user's
  images it names are written first, from the local CIFAR-10 copy;
* absolute output folders (``/shared/runs/...``) go under the scratch folder, a cluster's
  ``TF_CONFIG`` becomes a one-worker cluster on localhost, and a recipe file the text names
  as the user's own (``my_recipe.yaml``) is written as a small copy of ``digits_demo``.

Features a command leaves on (TensorBoard, parity checks) stay on. A documented command that
breaks fails here.
"""
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.reference import CIFAR_ROOT

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR_TRAIN = os.path.join(CIFAR_ROOT, "train") if CIFAR_ROOT else ""
DOCS = ["README.md"] + sorted(
    os.path.join("docs", f) for f in os.listdir(os.path.join(ROOT, "docs")) if f.endswith(".md"))
# Recipes whose dataset TFDS would download.
DOWNLOADING = ("cifar10_resnet18_k4", "imagenet_resnet18", "mnist_lenet")
MAX_BATCH = 16


def shell_blocks(text):
    """The ```bash / ```sh / ```shell blocks of a Markdown text, continuation lines joined."""
    blocks = re.findall(r"^```(?:bash|sh|shell)\n(.*?)^```", text, flags=re.M | re.S)
    return [re.sub(r"\\\n\s*", " ", block).splitlines() for block in blocks]


def documented_commands(path):
    """[(env changes, argv)] of every cbcn line of ``path``, in order."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
        blocks = shell_blocks(handle.read())
    commands = []
    for block in blocks:
        env, pending = {}, ""
        for line in block:
            pending += line + "\n"
            try:
                words = shlex.split(pending, comments=True)
            except ValueError:  # a quote that closes on a later line (TF_CONFIG='{...\n...}')
                continue
            pending = ""
            if not words:
                continue
            if words[0] == "export" and len(words) == 2 and "=" in words[1]:
                key, value = words[1].split("=", 1)
                env[key] = value
            elif words[0] == "cbcn" and "..." not in words:  # "cbcn train ... (same arguments)"
                commands.append((dict(env), words[1:]))
    return commands


def _local_cifar(root):
    """A tiny CIFAR-10 image folder (train / test) from $CBCN_DATA's copy, or random images."""
    rng = np.random.default_rng(0)
    classes = (sorted(os.listdir(CIFAR_TRAIN)) if os.path.isdir(CIFAR_TRAIN)
               else [f"class{i}" for i in range(10)])
    for cls in classes:
        images = (sorted(os.listdir(os.path.join(CIFAR_TRAIN, cls)))[:12]
                  if os.path.isdir(CIFAR_TRAIN) else [f"{i}.png" for i in range(12)])
        for i, name in enumerate(images):
            # ImageNet's recipe evaluates on "validation", the others on "test".
            for split in (("train",) if i < 8 else ("test", "validation")):
                os.makedirs(os.path.join(root, split, cls), exist_ok=True)
                target = os.path.join(root, split, cls, name)
                if os.path.isdir(CIFAR_TRAIN):
                    shutil.copy(os.path.join(CIFAR_TRAIN, cls, name), target)
                else:
                    Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(target)
    return root


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _user_images(words, scratch, local_cifar):
    """The user's images a `cbcn predict` line names (``NAME.png`` / ``.jpg``, or a folder
    ``NAME/``), written from the local CIFAR-10 copy's test images."""
    test = os.path.join(local_cifar, "test")
    sources = sorted(os.path.join(test, cls, name) for cls in sorted(os.listdir(test))
                     for name in sorted(os.listdir(os.path.join(test, cls))))[:3]
    for word in words:
        target = os.path.join(scratch, word)
        if os.path.exists(target):
            continue
        if word.lower().endswith((".png", ".jpg", ".jpeg")):
            Image.open(sources[0]).convert("RGB").save(target)
        elif word.endswith("/"):
            os.makedirs(target)
            for source in sources:
                shutil.copy(source, target)


def smaller(argv, env, scratch, local_cifar):
    """The size-reducing version of one documented command (see the module docstring)."""
    argv = list(argv)
    for i, word in enumerate(argv):
        if word.startswith("/") and i and argv[i - 1] in ("--output",):
            argv[i] = os.path.join(scratch, word.lstrip("/"))
        if i and argv[i - 1] == "--batch-size":
            argv[i] = str(min(int(word), MAX_BATCH))
    command = argv[0]
    if command == "train":
        recipe = argv[argv.index("--config") + 1]
        argv += ["--set", f"epochs={2 if '--resume' in argv else 1}",
                 "--set", "steps_per_epoch=2", "--verbose", "2"]
        if "--batch-size" not in argv:
            argv += ["--set", f"batch_size={MAX_BATCH}"]
        if recipe in DOWNLOADING:
            argv += ["--set", "dataset=image_folder", "--set", f"data_dir={local_cifar}"]
        if recipe == "imagenet_resnet18":  # the full-width ImageNet net, at a quarter width
            argv += ["--set", "model_kwargs.kernel_stage=[4,8,8,16]"]
    elif command == "benchmark":
        argv += ["--runs", "2", "--warmup", "1", "--threads", "1"]
    elif command == "demo":
        argv += ["--epochs", "1"]
    elif command == "predict":
        _user_images(argv[2:], scratch, local_cifar)
    env = dict(env)
    if "TF_CONFIG" in env:  # the documented cluster, shrunk to one worker on this machine
        cluster = json.loads(env["TF_CONFIG"])
        cluster["cluster"] = {"worker": [f"localhost:{_free_port()}"]}
        cluster["task"] = {"type": "worker", "index": 0}
        env["TF_CONFIG"] = json.dumps(cluster)
    return argv, env


def test_the_docs_have_cbcn_commands():
    readme = [argv[0] for _, argv in documented_commands("README.md")]
    assert {"train", "evaluate", "summary", "convert", "benchmark", "demo"} <= set(readme)
    assert len(readme) >= 9
    assert any(argv[0] == "train" and "TF_CONFIG" in env
               for doc in DOCS for env, argv in documented_commands(doc))


@pytest.mark.lce
@pytest.mark.subprocess
@pytest.mark.slow  # every documented command, `cbcn demo` included
@pytest.mark.parametrize("doc", DOCS)
def test_documented_commands_run_as_written(doc, tmp_path):
    commands = documented_commands(doc)
    if not commands:
        pytest.skip(f"{doc} has no cbcn command")
    scratch = tmp_path / "cwd"
    scratch.mkdir()
    local_cifar = _local_cifar(str(tmp_path / "cifar10"))
    # The user's own recipe the README trains: a small one of their choosing.
    with open(os.path.join(ROOT, "cbcn_tf", "recipes", "digits_demo.yaml")) as handle:
        recipe = yaml.safe_load(handle)
    recipe.update(tensorboard=True, model="cbcn_lenet",
                  model_kwargs={"kernel_stage": [2, 2, 2, 2], "orientations": 2})
    (scratch / "my_recipe.yaml").write_text(yaml.safe_dump(recipe))
    cbcn = os.path.join(os.path.dirname(sys.executable), "cbcn")
    for env, argv in commands:
        argv, env = smaller(argv, env, str(scratch), local_cifar)
        run_env = {**os.environ, **env, "TF_CPP_MIN_LOG_LEVEL": "3"}
        if "TF_CONFIG" not in env:
            run_env.pop("TF_CONFIG", None)
        if argv[0] == "demo":
            _earlier_demo_run(scratch / "demo_output" / "cbcn")
        tic = time.perf_counter()
        done = subprocess.run([cbcn, *argv], cwd=scratch, env=run_env, capture_output=True,
                              text=True, timeout=900)
        print(f"{time.perf_counter() - tic:6.1f} s  cbcn {shlex.join(argv)}")
        assert done.returncode == 0, (
            f"{doc}: `cbcn {shlex.join(argv)}` exited {done.returncode}:\n"
            f"{done.stderr[-3000:]}")
        if argv[0] == "demo":
            _check_demo_output(scratch / "demo_output")


def _earlier_demo_run(run_dir):
    from cbcn_tf import config as config_lib

    os.makedirs(run_dir / "backup")
    config_lib.save_config(config_lib.load_config("digits_demo"), run_dir / "config.yaml")
    (run_dir / "model.h5").write_text("old")
    (run_dir / "notes.txt").write_text("mine")


def _check_demo_output(out):
    """What `make demo` promises: results for three arms, curves, an LCE file that runs."""
    import csv

    import larq_compute_engine as lce

    from cbcn_tf.converters import audit_ops
    from cbcn_tf.data import load_dataset

    assert (out / "cbcn" / "notes.txt").read_text() == "mine"
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["model"] for r in rows] == ["cbcn_resnet18", "xnor_resnet18_doubled",
                                          "cbcn_resnet18"]
    assert all(0 <= float(r["top1"]) <= float(r["top5"]) <= 1 for r in rows)
    assert (out / "curves.png").stat().st_size > 0
    flatbuffer = (out / "cbcn.tflite").read_bytes()
    assert audit_ops(flatbuffer).counts["LceBconv2d"] == 16
    images, _ = next(iter(load_dataset("digits", "test", batch_size=8)))
    probs = lce.testing.Interpreter(flatbuffer).predict(images.numpy())
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
