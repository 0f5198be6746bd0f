"""import cbcn_tf selects Keras 2 and refuses clearly when Keras 3 is already loaded."""
import os
import subprocess
import sys

import pytest
import tensorflow as tf


def _run(code, **env):
    environ = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    environ.update(env, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=environ, timeout=120)


def test_tf_keras_is_keras2_in_this_process():
    assert tf.keras.layers.Layer.__module__.startswith("tf_keras")
    assert os.environ["TF_USE_LEGACY_KERAS"] == "1"


@pytest.mark.subprocess
def test_import_sets_legacy_keras_before_tf_keras_is_touched():
    result = _run("import tensorflow as tf, cbcn_tf; print(tf.keras.layers.Layer.__module__)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("tf_keras")


@pytest.mark.subprocess
@pytest.mark.parametrize("first", ["import tensorflow as tf; tf.keras.layers.Layer",
                                   "import tensorflow.keras.layers"])
def test_keras3_already_loaded_gives_clear_error(first):
    result = _run(first + "; import cbcn_tf")
    assert result.returncode != 0
    assert "Keras 3 is already loaded" in result.stderr and "tf-keras" in result.stderr


@pytest.mark.subprocess
def test_legacy_keras_imported_first_is_accepted():
    result = _run("import tensorflow.keras.layers, cbcn_tf; print('ok')", TF_USE_LEGACY_KERAS="1")
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


@pytest.mark.subprocess
def test_keras3_selected_by_environment_gives_clear_error():
    result = _run("import cbcn_tf", TF_USE_LEGACY_KERAS="0")
    assert result.returncode != 0 and "selects Keras 3" in result.stderr
