"""The `cbcn` command: smoke runs on the packaged digits and on mocked CIFAR-10, and errors."""
import os
import shutil
import subprocess
import sys

import cbcn_tf  # noqa: F401  (Keras 2 before tensorflow)
import numpy as np
import pytest
import tensorflow as tf

from cbcn_tf import cli, config as config_lib, training
from cbcn_tf.data import load_dataset


def score_table(out):
    """`cbcn evaluate`'s table as {split: {column: score}}, read by column: the header names
    the columns, each score ends where its column's label ends (right-aligned), and the split
    name is what stands before the first score."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == ["split"])
    header = lines[start]
    labels = header.split()[1:]
    ends = [header.index(label) + len(label) for label in labels]
    table = {}
    for line in lines[start + 1:]:
        if not line.strip():
            break
        name, first = line[:ends[0]].rsplit(None, 1)
        cells = [first] + [line[a:b] for a, b in zip(ends, ends[1:])]
        assert not line[ends[-1]:].strip(), f"text right of the last column: {line!r}"
        table[name.strip()] = {label: float(cell) for label, cell in zip(labels, cells)}
    return table


def markdown_rows(out):
    """The rows of the first Markdown table in ``out``, as {column: cell text}."""
    lines = [line.strip() for line in out.splitlines() if line.strip().startswith("|")]

    def cells(line):
        return [cell.strip() for cell in line.strip("|").split("|")]

    header = cells(lines[0])
    return [dict(zip(header, cells(line))) for line in lines[2:]]


def test_train_writes_the_run_files(tiny_run):
    for name in ("config.yaml", "history.csv", "model.h5", "summary.txt", "curves.png"):
        assert os.path.getsize(tiny_run / name) > 0, name
    saved = config_lib.read_config(tiny_run / "config.yaml")
    assert (saved.model, saved.seed, saved.epochs) == ("cbcn_lenet", 3, 1)
    assert saved.model_kwargs == {"input_shape": [16, 16, 1], "num_classes": 10,
                                  "kernel_stage": [2, 2, 2, 2], "orientations": 2}


def test_resume_continues_at_the_next_epoch(tiny_run, tmp_path, train_cli):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    # Another seed: had epoch 0 been rerun (nothing restored), its row would differ.
    assert train_cli(run, "epochs=2", extra=["--resume", "--seed", 4]) == 0
    history = training.read_history(run / "history.csv")
    assert [row["epoch"] for row in history] == [0, 1]
    assert history[0] == training.read_history(tiny_run / "history.csv")[0]
    assert config_lib.read_config(run / "config.yaml").epochs == 2


def test_evaluate_prints_what_model_evaluate_gives(tiny_run, capsys, run_cli):
    capsys.readouterr()
    assert run_cli("evaluate", tiny_run) == 0
    printed = score_table(capsys.readouterr().out)
    assert set(printed) == {"test", "test (rotated)"}

    model = training.load_model(tiny_run)
    training.compile_for_classification(model)
    for name, rotate in (("test", False), ("test (rotated)", True)):
        top1, top5, loss = (printed[name][column] for column in ("top-1", "top-5", "loss"))
        expected = model.evaluate(load_dataset("digits", "test", rotate=rotate), verbose=0,
                                  return_dict=True)
        assert 0.0 <= top1 <= top5 <= 1.0
        np.testing.assert_allclose([top1, top5, loss],
                                   [expected["accuracy"], expected["top5"], expected["loss"]],
                                   atol=6e-5)


def test_evaluate_at_fixed_angles_matches_turned_data(tiny_run, capsys, run_cli):
    capsys.readouterr()
    assert run_cli("evaluate", tiny_run, "--no-rotated", "--angle", "0", "--angle", "90",
                   "--angle", "-22.5") == 0
    printed = score_table(capsys.readouterr().out)
    assert set(printed) == {"test", "test at 0 deg", "test at 90 deg", "test at -22.5 deg"}
    assert printed["test at 0 deg"] == printed["test"]

    model = training.load_model(tiny_run)
    training.compile_for_classification(model)
    for angle in (90, -22.5):
        # The CLI reads the split once for all angles (load_turned); the reference loads each
        # angle on its own; the quarter turn itself is checked against NumPy below.
        data = load_dataset("digits", "test", angle=angle)
        expected = model.evaluate(data, verbose=0, return_dict=True)
        row = printed[f"test at {angle:g} deg"]
        np.testing.assert_allclose([row["top-1"], row["top-5"], row["loss"]],
                                   [expected["accuracy"], expected["top5"], expected["loss"]],
                                   atol=6e-5)
    upright = np.concatenate([x for x, _ in load_dataset("digits", "test")])
    quarter = np.concatenate([x for x, _ in load_dataset("digits", "test", angle=90)])
    np.testing.assert_allclose(quarter, np.rot90(upright, 1, axes=(1, 2)), atol=1e-5)


@pytest.mark.parametrize("bad", ["ninety", "nan", "inf"])
def test_evaluate_rejects_an_angle_that_is_not_a_number(tiny_run, capsys, run_cli, bad):
    assert run_cli("evaluate", tiny_run, "--angle", bad) == 2
    assert f"{bad!r} is not a number of degrees" in capsys.readouterr().err


@pytest.mark.slow  # a ResNet18 on 32x32 images
def test_train_and_evaluate_on_mocked_cifar10(tmp_path, capsys, run_cli):
    tfds = pytest.importorskip("tensorflow_datasets")
    run = tmp_path / "cifar"
    with tfds.testing.mock_data(num_examples=24):
        code = run_cli("train", "--config", "cifar10_resnet18_k4", "--output", run,
                       "--verbose", "0", "--set", "epochs=1", "--set", "steps_per_epoch=2",
                       "--set", "batch_size=8", "--set", "model_kwargs.kernel_stage=[2,2,2,2]",
                       "--set", "model_kwargs.orientations=2", "--set", "tensorboard=false")
        assert code == 0
        capsys.readouterr()
        assert run_cli("evaluate", run, "--no-rotated") == 0
    ((split, scores),) = score_table(capsys.readouterr().out).items()
    assert split == "test"
    assert 0.0 <= scores["top-1"] <= scores["top-5"] <= 1.0 and scores["loss"] > 0
    assert training.load_model(run).input_shape == (None, 32, 32, 3)


def test_existing_run_needs_resume(tiny_run, train_cli, error_line):
    assert train_cli(tiny_run) == 2
    assert "already holds a training run; pass --resume" in error_line()


def test_resume_refuses_another_models_run(tiny_run, train_cli, error_line):
    assert train_cli(tiny_run, "model_kwargs.orientations=4", extra=["--resume"]) == 2
    message = error_line()
    assert f"Cannot resume {tiny_run}: its model_kwargs is" in message
    assert "'orientations': 2" in message and "'orientations': 4" in message
    assert train_cli(tiny_run, "model=cbcn_resnet18", extra=["--resume"]) == 2
    assert "its model is 'cbcn_lenet' but this run asks for 'cbcn_resnet18'" in error_line()


def test_typed_flags_are_config_keys():
    def config(*args):
        return cli._train_config(cli._parser().parse_args(
            ["train", "--config", "digits_demo", "--output", "x", *args]))

    assert config() == config_lib.load_config("digits_demo")
    flagged = config("--set", "epochs=3", "--seed", "5",
                     "--deterministic", "--batch-size", "64", "--distribute", "mirrored",
                     "--lr-scaling", "linear")
    assert (flagged.epochs, flagged.seed, flagged.deterministic, flagged.batch_size,
            flagged.distribute, flagged.lr_scaling) == (3, 5, True, 64, "mirrored", "linear")
    with pytest.raises(SystemExit):  # argparse: not one of the config's choices
        config("--distribute", "tpu")


def test_summary_prints_larq_and_cbcn_tables(capsys, run_cli, error_line):
    assert run_cli("summary", "cbcn_resnet18", "--dataset", "digits",
                   "--set", "kernel_stage=[2, 2, 2, 2]", "--set", "orientations=2") == 0
    out = capsys.readouterr().out
    assert "Compression Ratio of Memory" in out and "cbcn_tf summary: cbcn_resnet18" in out
    assert "(-1, 16, 16, 4)" in out  # the digits input, two maps x K = 2
    assert run_cli("summary", "cbcn_resnet18", "--set", "kernel_size=5") == 2
    assert "Model keyword arguments do not fit cbcn_resnet18" in error_line()


def test_list_commands(capsys, run_cli):
    assert run_cli("list-models") == 0
    assert {"cbcn_resnet18", "cbcn_lenet", "xnor_resnet18"} <= set(capsys.readouterr().out.split())
    assert run_cli("list-datasets") == 0
    assert {"digits", "cifar10", "mnist"} <= set(capsys.readouterr().out.split())
    assert run_cli("list-recipes") == 0
    assert capsys.readouterr().out.split() == config_lib.list_recipes()


@pytest.mark.lce
def test_convert_and_benchmark(tiny_run, tmp_path, capsys, run_cli, error_line):
    lce = pytest.importorskip("larq_compute_engine")
    from cbcn_tf.converters import audit_ops

    path = tmp_path / "model.tflite"
    assert run_cli("convert", tiny_run, path) == 0
    # The file holds one LCE binary conv per CBConv2D, and LCE's interpreter gives the Keras
    # model's answers.
    model = training.load_model(tiny_run)
    cbconvs = [layer for layer in model.layers if isinstance(layer, cbcn_tf.CBConv2D)]
    assert audit_ops(path.read_bytes()).counts["LceBconv2d"] == len(cbconvs) == 3
    images, _ = next(iter(load_dataset("digits", "test", batch_size=32)))
    keras = model.predict(images, verbose=0)
    ours = lce.testing.Interpreter(path.read_bytes()).predict(images.numpy())
    # Measured: within 5e-8 on every image. A sign that float rounding flips on one image
    # may move that image's answer, hence 90 %.
    assert np.mean(np.abs(ours - keras).max(axis=1) < 1e-5) >= 0.9
    capsys.readouterr()
    assert run_cli("benchmark", path, "--runs", 2, "--warmup", 0, "--threads", 1) == 0
    rows = markdown_rows(capsys.readouterr().out)
    assert rows and all((row["model"], row["runtime"], row["threads"], row["runs"]) ==
                        ("model.tflite", "lce", "1", "2") for row in rows)
    assert all(0 < float(row["min ms"]) <= float(row["median ms"]) <= float(row["p90 ms"])
               for row in rows)
    assert run_cli("benchmark", tmp_path / "missing.tflite") == 2
    assert "No .tflite file at" in error_line()


@pytest.mark.subprocess
def test_console_script_runs():
    script = os.path.join(os.path.dirname(sys.executable), "cbcn")
    done = subprocess.run([script, "list-models"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr
    assert "cbcn_resnet18" in done.stdout.split()


def test_evaluate_without_config_needs_dataset(tmp_path, run_cli, error_line):
    inputs = tf.keras.Input((16, 16, 1))
    outputs = tf.keras.layers.Dense(10, activation="softmax")(
        tf.keras.layers.GlobalAveragePooling2D()(inputs))
    training.save_model(tf.keras.Model(inputs, outputs), str(tmp_path / "m.h5"))
    assert run_cli("evaluate", tmp_path / "m.h5") == 2
    assert "pass --dataset NAME" in error_line()
    assert run_cli("evaluate", tmp_path / "m.h5", "--dataset", "digits", "--no-rotated") == 0


# The demo (`cbcn demo`, what `make demo` runs) is run as documented, with a short budget, by
# tests/test_docs_commands.py, which also checks its results, curves, LCE export and that a
# rerun keeps a user's notes.


def test_tensorboard_logs_are_written_by_default(tmp_path, train_cli):
    """TensorBoard is on by default (TrainConfig and the paper recipes): the run writes event
    files TensorBoard reads, with the epoch losses of history.csv."""
    assert config_lib.TrainConfig().tensorboard
    assert config_lib.load_config("cifar10_resnet18_k4").tensorboard
    run = tmp_path / "tb"
    assert train_cli(run, "tensorboard=true", "epochs=2") == 0
    events = [os.path.join(d, f) for d, _, names in os.walk(run / "tensorboard" / "train")
              for f in names if f.startswith("events.out.tfevents")]
    assert events
    losses = {}
    for path in events:
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == "epoch_loss":
                    losses[event.step] = float(tf.make_ndarray(value.tensor))
    history = training.read_history(run / "history.csv")
    assert sorted(losses) == [0, 1]
    np.testing.assert_allclose([losses[r["epoch"]] for r in history],
                               [r["loss"] for r in history], rtol=1e-5)
