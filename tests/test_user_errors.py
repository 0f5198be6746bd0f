"""User errors are one family (`cbcn_tf.errors.CbcnError`), printed as one line with exit 2;
model files cannot run code unless trusted; temp files never follow planted symlinks; damaged
files, full disks and mismatched data each give one line naming the path and the fix, with no
partial output."""
import os
import shutil
import tempfile

import cbcn_tf  # noqa: F401  (Keras 2 before tensorflow)
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from cbcn_tf import files, training
from cbcn_tf import config as config_lib
from cbcn_tf.errors import (CbcnError, ConfigError, DataError, DivergenceError, ExportError,
                            ModelFileError, OutputError, TrainingDiverged, UntrustedModelError)
from cbcn_tf.models import create_model

@pytest.fixture(scope="module")
def tflite_file(tmp_path_factory):
    from cbcn_tf.converters import export_lce

    path = tmp_path_factory.mktemp("tflite") / "m.tflite"
    export_lce(create_model("cbcn_lenet", input_shape=(16, 16, 1), orientations=2,
                            kernel_stage=(2, 2, 2, 2)), str(path), verify=False)
    return path


# --- the family --------------------------------------------------------------------------------


def test_error_family_and_old_names():
    for kind in (ConfigError, DataError, ExportError, DivergenceError, ModelFileError,
                 OutputError, UntrustedModelError):
        assert issubclass(kind, CbcnError)
    assert training.TrainingDiverged is TrainingDiverged is DivergenceError
    assert config_lib.ConfigError is ConfigError
    assert issubclass(ConfigError, ValueError) and issubclass(OutputError, OSError)


def test_cli_keeps_the_traceback_of_a_bug(monkeypatch, tmp_path, train_cli):
    """A ValueError / OSError that is not a CbcnError is a bug: it propagates."""
    def buggy(*args, **kwargs):
        raise ValueError("a bug inside TensorFlow")

    monkeypatch.setattr(training, "train", buggy)
    with pytest.raises(ValueError, match="a bug inside TensorFlow"):
        train_cli(tmp_path / "run")
    monkeypatch.setattr(training, "train", lambda *a, **k: (_ for _ in ()).throw(OSError(5, "io")))
    with pytest.raises(OSError):
        train_cli(tmp_path / "run")


# --- model files cannot run code ----------------------------------------------------------------


def _lambda_model(path, marker):
    inputs = tf.keras.Input((16, 16, 1))
    x = tf.keras.layers.Lambda(
        lambda t, m=str(marker): (__import__("pathlib").Path(m).touch(), t)[1])(inputs)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(10, activation="softmax")(x))
    model.save(str(path), save_format="h5")
    os.remove(marker)  # building the model above ran the lambda once


def test_lambda_model_file_is_refused_unless_trusted(tmp_path, run_cli, error_line):
    path, marker = tmp_path / "evil.h5", tmp_path / "marker"
    _lambda_model(path, marker)
    assert not marker.exists()
    assert run_cli("evaluate", path, "--dataset", "digits", "--no-rotated") == 2
    err = error_line()
    assert str(path) in err and "Lambda" in err and "--trust-model" in err
    assert run_cli("convert", path, tmp_path / "out.tflite", "--float") == 2
    assert "Lambda" in error_line()
    with pytest.raises(UntrustedModelError):
        training.load_model(path)
    assert not marker.exists() and not (tmp_path / "out.tflite").exists()

    model = training.load_model(path, trusted=True)  # the caller vouches: its code runs
    assert marker.exists() and model.output_shape == (None, 10)
    os.remove(marker)
    assert run_cli("evaluate", path, "--dataset", "digits", "--no-rotated",
                   "--trust-model") == 0
    assert marker.exists()


def test_foreign_layer_class_is_refused(tmp_path):
    @tf.keras.utils.register_keras_serializable(package="elsewhere")
    class Foreign(tf.keras.layers.Layer):
        def call(self, inputs):
            return inputs

    inputs = tf.keras.Input((4,))
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(2)(Foreign()(inputs)))
    model.save(str(tmp_path / "f.h5"), save_format="h5")
    with pytest.raises(UntrustedModelError, match="elsewhere>Foreign"):
        training.load_model(tmp_path / "f.h5")
    assert training.load_model(tmp_path / "f.h5", trusted=True).output_shape == (None, 2)


def test_zoo_models_load_untrusted(tmp_path):
    for name, kwargs in (("cbcn_lenet", {"input_shape": (16, 16, 1)}),
                         ("xnor_resnet18", {"input_shape": (16, 16, 1)})):
        model = create_model(name, **kwargs)
        training.save_model(model, tmp_path / f"{name}.h5")
        loaded = training.load_model(tmp_path / f"{name}.h5")
        assert loaded.count_params() == model.count_params()


def test_truncated_or_foreign_model_file(tiny_run, tmp_path, run_cli, error_line):
    data = (tiny_run / "model.h5").read_bytes()
    for name, content in (("half.h5", data[: len(data) // 2]), ("text.h5", b"not hdf5" * 99)):
        (tmp_path / name).write_bytes(content)
        assert run_cli("evaluate", tmp_path / name, "--dataset", "digits") == 2
        err = error_line()
        assert str(tmp_path / name) in err and "copy it again or retrain" in err


# --- temp files -----------------------------------------------------------------------------------


def test_atomic_write_never_follows_a_planted_symlink(tmp_path, monkeypatch):
    target = tmp_path / "victim.txt"
    target.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    # The old predictable name, and the next names tempfile would pick.
    (out / f".model.tmp-{os.getpid()}.tflite").symlink_to(target)
    names = [f"plant{i}" for i in range(5)] + ["free1", "free2"]
    for name in names[:5]:
        (out / f".model.{name}.tmp.tflite").symlink_to(target)
    monkeypatch.setattr(tempfile, "_get_candidate_names", lambda: iter(names))
    files.write_bytes(out / "model.tflite", b"new model")
    assert target.read_text() == "precious"
    assert (out / "model.tflite").read_bytes() == b"new model"
    assert not (out / "model.tflite").is_symlink()
    assert all(os.readlink(out / f".model.{n}.tmp.tflite") == str(target) for n in names[:5])
    assert not (out / ".model.free1.tmp.tflite").exists()  # the temp file was renamed away
    monkeypatch.undo()
    files.write_text(out / "note.txt", "hi")  # real random names work too
    assert oct(os.stat(out / "note.txt").st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- demo ---------------------------------------------------------------------------------------


def _fake_demo_run(run_dir, overrides=()):
    os.makedirs(run_dir / "backup")
    config_lib.save_config(config_lib.load_config("digits_demo", list(overrides)),
                           run_dir / "config.yaml")
    for name in ("history.csv", "model.h5", "summary.txt", "curves.png"):
        (run_dir / name).write_text("x")
    (run_dir / "notes.txt").write_text("mine")


def test_demo_checks_arguments_before_touching_anything(tmp_path, run_cli):
    from cbcn_tf import demo

    out = tmp_path / "demo"
    _fake_demo_run(out / "cbcn")
    before = sorted(os.listdir(out / "cbcn"))
    with pytest.raises(ConfigError, match="epochs"):
        demo.run_demo(str(out), epochs=0)
    assert sorted(os.listdir(out / "cbcn")) == before
    assert run_cli("demo", "--output", out, "--epochs", "0") == 2
    assert sorted(os.listdir(out / "cbcn")) == before

    # A folder of an arm's name that is not a demo run: refused before anything is removed.
    (out / "xnor").mkdir()
    (out / "xnor" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a demo run"):
        demo.run_demo(str(out), epochs=1)
    assert sorted(os.listdir(out / "cbcn")) == before

    demo._remove_previous_run(str(out / "cbcn"))  # what a valid rerun removes
    assert os.listdir(out / "cbcn") == ["notes.txt"]


# --- failures that are one line -------------------------------------------------------------------


@pytest.mark.lce
def test_benchmark_refuses_damaged_tflite_files(tflite_file, tmp_path, run_cli, error_line):
    data = tflite_file.read_bytes()
    rotten = bytearray(data)
    for i in np.random.default_rng(0).integers(0, len(data), 64):
        rotten[i] ^= 0xFF
    cases = {"truncated.tflite": data[: len(data) // 2], "text.tflite": b"hello " * 500,
             "rotten.tflite": bytes(rotten), "empty.tflite": b""}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        assert run_cli("benchmark", tmp_path / name, "--runs", "1", "--warmup", "0") == 2
        err = error_line()
        assert str(tmp_path / name) in err and "cbcn convert" in err, err
    assert run_cli("benchmark", tflite_file, "--baseline", tmp_path / "text.tflite",
                   "--runs", "1") == 2
    assert "text.tflite" in error_line()


def test_convert_into_a_missing_folder_fails_before_converting(tiny_run, tmp_path, monkeypatch,
                                                               run_cli, error_line):
    import cbcn_tf.converters as converters

    def must_not_run(*args, **kwargs):
        raise AssertionError("converted before checking the destination")

    monkeypatch.setattr(converters, "export_lce", must_not_run)
    monkeypatch.setattr(training, "load_model", must_not_run)
    target = tmp_path / "missing" / "m.tflite"
    assert run_cli("convert", tiny_run, target) == 2
    err = error_line()
    assert str(tmp_path / "missing") in err and "does not exist" in err and ".tmp" not in err
    assert not (tmp_path / "missing").exists()


@pytest.mark.lce
def test_float_export_of_a_binary_model_warns(tiny_run, tmp_path, capsys, run_cli):
    assert run_cli("convert", tiny_run, tmp_path / "f.tflite", "--float", "--no-verify") == 0
    err = capsys.readouterr().err
    assert "cbcn: warning:" in err and "32x larger" in err
    assert (tmp_path / "f.tflite").stat().st_size > 0


def test_model_input_shape_must_match_the_dataset(tiny_run, tmp_path, run_cli, train_cli,
                                                  error_line):
    assert run_cli("evaluate", tiny_run, "--dataset", "cifar10") == 2
    err = error_line()
    assert "(16, 16, 1)" in err and "(32, 32, 3)" in err
    output = tmp_path / "run"
    assert train_cli(output, "model_kwargs.input_shape=[28, 28, 1]") == 2
    assert "does not match the digits images (16, 16, 1)" in error_line()
    assert not output.exists()


@pytest.mark.parametrize("content", [
    "loss,accuracy\n0.5,0.9\n",            # no epoch column
    "epoch,loss\nzero,0.5\n",              # epoch not a number
    "epoch,loss\n0,0.5,7,8\n",             # ragged row
    b"\xff\xfe\x00garbage",                # not text
])
def test_malformed_history_on_restart(tiny_run, tmp_path, content, train_cli, error_line):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    history = run / "history.csv"
    history.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = {name: os.path.getmtime(run / name) for name in os.listdir(run)}
    assert train_cli(run, "epochs=2", extra=["--resume"]) == 2
    err = error_line()
    assert str(history) in err and "delete it" in err
    assert {name: os.path.getmtime(run / name) for name in os.listdir(run)} == before


def test_config_yaml_stores_absolute_paths(tmp_path, monkeypatch, capsys, run_cli, train_cli):
    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            os.makedirs(root / split / cls)
            for i in range(4):
                Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(
                    root / split / cls / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    assert train_cli("run", "dataset=image_folder", "data_dir=imgs") == 0
    saved = config_lib.read_config(tmp_path / "run" / "config.yaml")
    assert saved.data_dir == str(root)
    monkeypatch.chdir(tmp_path / "run")  # evaluate and resume from elsewhere
    capsys.readouterr()
    assert run_cli("evaluate", ".", "--no-rotated") == 0
    assert train_cli(".", "dataset=image_folder", f"data_dir={root}", "epochs=2",
                     extra=["--resume"]) == 0


def test_one_class_dataset_is_an_error(tmp_path, train_cli, error_line):
    os.makedirs(tmp_path / "one" / "train" / "only")
    for i in range(3):
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "one" / "train" / "only"
                                                           / f"{i}.png")
    output = tmp_path / "run"
    assert train_cli(output, f"dataset=folder:{tmp_path / 'one'}", "eval_split=train") == 2
    err = error_line()
    assert "one class ('only')" in err and "at least two class folders" in err
    assert not output.exists()


def test_full_disk_during_training(small_tmpfs, train_cli, error_line):
    """A real full disk (a 28 KiB tmpfs: the config and summary fit, the first checkpoint
    does not): TensorFlow's checkpoint writer fails inside fit; one line naming the run
    folder, no model.h5."""
    mount = small_tmpfs
    output = mount / "run"
    code = train_cli(output, "epochs=3", "tensorboard=true")
    err = error_line()
    assert code == 2
    assert "No space left on device (the disk is full)" in err, err
    assert f"Could not write the run in {output}" in err, err
    assert not (output / "model.h5").exists()
    assert not [n for n in os.listdir(output) if ".tmp" in n] if output.exists() else True
