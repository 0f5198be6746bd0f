"""Trust and model files (`cbcn_tf.model_files` through `training.load_model` and the `cbcn`
commands): a Lambda layer or a class registered elsewhere is refused unless the model is
trusted, the zoo loads untrusted, and a damaged or foreign file is one line naming it.
test_model_files.py checks the allow-list itself."""
import os

import cbcn_tf  # noqa: F401  (Keras 2 before tensorflow)
import pytest
import tensorflow as tf

from cbcn_tf import training
from cbcn_tf.errors import UntrustedModelError
from cbcn_tf.models import create_model


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
