"""A model file from elsewhere cannot run anything while it loads: every class, function, module
and TensorFlow op its config names is checked before Keras reads it; zoo models and functional
models built from pure tensor ops still load without --trust-model."""
import copy
import json
import shutil

import cbcn_tf  # noqa: F401  (Keras 2 before tensorflow)
import h5py
import numpy as np
import pytest
import tensorflow as tf

from cbcn_tf import model_files, training
from cbcn_tf.errors import ModelFileError, UntrustedModelError
from cbcn_tf.models import create_model, list_models


@pytest.fixture(scope="module")
def lenet_file(tmp_path_factory):
    """A tiny CBCN LeNet saved as `cbcn train` saves RUN/model.h5 (CBConv2D, larq
    quantizers, Dense, ...)."""
    path = tmp_path_factory.mktemp("lenet") / "model.h5"
    training.save_model(create_model("cbcn_lenet", input_shape=(16, 16, 1), orientations=2,
                                     kernel_stage=(2, 2, 2, 2)), path)
    return path


def edit_config(path, edit):
    """Apply ``edit(config)`` to the ``model_config`` of the .h5 file ``path`` in place."""
    with h5py.File(path, "r+") as handle:
        config = json.loads(handle.attrs["model_config"])
        edit(config)
        handle.attrs["model_config"] = json.dumps(config).encode("utf-8")


def tampered(source, dest, edit):
    shutil.copy(source, dest)
    edit_config(dest, edit)
    return dest


def op_layer(name, function, *args, **kwargs):
    """A TFOpLambda layer calling ``tf.<function>(*args, **kwargs)`` on constants only, as an
    attacker appends it to a functional model's layers."""
    node = [["_CONSTANT_VALUE", -1, args[0], kwargs]] if args else []
    return {"class_name": "TFOpLambda", "name": name, "inbound_nodes": node,
            "config": {"name": name, "trainable": True, "dtype": "float32",
                       "function": function}}


def append_layer(layer):
    return lambda config: config["config"]["layers"].append(layer)


def layer_config(config, name):
    """The config dict of the layer called ``name`` anywhere in ``config``."""
    stack = [config]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            inner = item.get("config")
            if isinstance(inner, dict) and name in (item.get("name"), inner.get("name")):
                return inner
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    raise KeyError(name)


def set_field(layer, key, value):
    return lambda config: layer_config(config, layer).__setitem__(key, value)


@pytest.fixture
def keras_untouched(monkeypatch):
    """Fails the test if Keras is asked to load a model (the check must refuse first)."""
    calls = []
    monkeypatch.setattr(tf.keras.models, "load_model", lambda *a, **k: calls.append(a))
    yield
    assert not calls, "Keras loaded a file that should have been refused"


def assert_refused_line(err, path, layer):
    assert str(path) in err and layer in err and "--trust-model" in err, err


# --- TensorFlow functions that write files --------------------------------------------------


def test_write_file_layer_writes_nothing_from_any_entry_point(tiny_run, tmp_path, run_cli,
                                                                error_line):
    target = tmp_path / "planted.txt"
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    edit_config(run / "model.h5", append_layer(
        op_layer("writer", "io.write_file", str(target), contents="attacker text")))
    model = run / "model.h5"

    assert run_cli("evaluate", model, "--no-rotated") == 2
    assert_refused_line(error_line(), model, "'writer' (TFOpLambda)")
    assert run_cli("convert", model, tmp_path / "out.tflite") == 2
    assert_refused_line(error_line(), model, "'writer' (TFOpLambda)")
    assert run_cli("evaluate", run, "--no-rotated") == 2
    assert_refused_line(error_line(), model, "'writer' (TFOpLambda)")
    with pytest.raises(UntrustedModelError, match="'writer' \\(TFOpLambda\\)"):
        training.load_model(run)
    assert not target.exists() and not (tmp_path / "out.tflite").exists()

    # The attack is real: a caller who vouches for the file gets the file written.
    with pytest.raises(Exception):
        training.load_model(model, trusted=True)
    assert target.read_text() == "attacker text"


def test_makedirs_layer_is_refused(lenet_file, tmp_path, run_cli, error_line):
    target = tmp_path / "planted" / "folder"
    path = tampered(lenet_file, tmp_path / "m.h5",
                    append_layer(op_layer("mk", "io.gfile.makedirs", str(target))))
    assert run_cli("evaluate", path, "--dataset", "digits", "--no-rotated") == 2
    assert_refused_line(error_line(), path, "'mk' (TFOpLambda)")
    assert run_cli("convert", path, tmp_path / "out.tflite", "--float") == 2
    assert_refused_line(error_line(), path, "'mk' (TFOpLambda)")
    assert not (tmp_path / "planted").exists()
    with pytest.raises(Exception):
        training.load_model(path, trusted=True)
    assert target.is_dir()


@pytest.mark.parametrize("function", [
    "io.gfile.GFile", "io.read_file", "py_function", "numpy_function", "compat.v1.py_func",
    "print", "debugging.assert_equal", "saved_model.save", "summary.write", "strings.format",
    "compat.v1.io.write_file", "math.add.__globals__", "", None, 3, ["io.write_file"]])
def test_op_layers_may_call_only_pure_tensor_ops(lenet_file, tmp_path, function,
                                                  keras_untouched):
    for kind in ("TFOpLambda", "SlicingOpLambda"):
        layer = op_layer("op", function, "x")
        layer["class_name"] = kind
        path = tampered(lenet_file, tmp_path / "m.h5", append_layer(layer))
        with pytest.raises(UntrustedModelError, match=f"'op' \\({kind}\\)"):
            training.load_model(path)


def test_call_arguments_must_be_plain_data(lenet_file, tmp_path, keras_untouched):
    dense = {"class_name": "Dense", "config": {"name": "d", "units": 1}}
    for value in (dense, {"class_name": "TypeSpec", "type_spec": "x", "serialized": []}):
        path = tampered(lenet_file, tmp_path / "m.h5", append_layer(
            op_layer("mul", "math.multiply", 2.0, y=value)))
        with pytest.raises(UntrustedModelError, match="'mul' \\(TFOpLambda\\)"):
            training.load_model(path)


def test_functional_model_of_pure_tensor_ops_loads_untrusted(tmp_path):
    inputs = tf.keras.Input((8, 8, 2))
    x = tf.keras.layers.Conv2D(4, 3, padding="same")(inputs)
    turned = tf.image.rot90(x)
    x = tf.concat([x + 1.0, turned * 2.0, tf.roll(x, 1, axis=1)], axis=-1)
    x = tf.nn.relu(tf.reshape(x, (-1, 8, 8, 12)))[..., :6]
    x = tf.math.reduce_mean(tf.transpose(x, (0, 2, 1, 3)), axis=[1, 2])
    x = tf.stack(tf.split(x, 2, axis=-1), axis=1)
    model = tf.keras.Model(inputs, tf.keras.layers.Flatten()(x))
    training.save_model(model, tmp_path / "ops.h5")
    layers = model_files.read_model_config(tmp_path / "ops.h5")["config"]["layers"]
    functions = {layer["config"].get("function") for layer in layers}
    assert {"image.rot90", "concat", "__operators__.getitem", "roll"} <= functions
    loaded = training.load_model(tmp_path / "ops.h5")
    images = np.random.default_rng(0).normal(size=(2, 8, 8, 2)).astype("float32")
    np.testing.assert_allclose(loaded(images), model(images), rtol=1e-6)


# --- nested layers and objects --------------------------------------------------------------


def test_bad_layer_inside_a_nested_model_is_refused(tmp_path, run_cli, error_line):
    inputs = tf.keras.Input((16, 16, 1))
    x = tf.keras.layers.Conv2D(4, 3, name="inner_conv")(inputs)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    inner = tf.keras.Model(inputs, tf.keras.layers.Dense(10)(x), name="inner")
    outer = tf.keras.Sequential([tf.keras.Input((16, 16, 1)), inner,
                                 tf.keras.layers.Activation("softmax")])
    path = tmp_path / "nested.h5"
    training.save_model(outer, path)
    assert training.load_model(path).count_params() == outer.count_params()  # as saved: fine

    target = tmp_path / "planted.txt"
    edit_config(path, lambda config: layer_config(config, "inner")["layers"].append(
        op_layer("inner_writer", "io.write_file", str(target), contents="x")))
    assert run_cli("evaluate", path, "--dataset", "digits", "--no-rotated") == 2
    assert_refused_line(error_line(), path, "'inner_writer' (TFOpLambda)")
    assert not target.exists()
    with pytest.raises(Exception):
        training.load_model(path, trusted=True)
    assert target.exists()  # the nested layer does run when trusted


def test_bad_layer_inside_a_wrapper_is_refused(tmp_path, keras_untouched):
    inputs = tf.keras.Input((3, 4))
    model = tf.keras.Model(inputs, tf.keras.layers.TimeDistributed(
        tf.keras.layers.Dense(2, name="inner_dense"), name="td")(inputs))
    path = tmp_path / "td.h5"
    training.save_model(model, path)
    model_files.check_model_file(path)  # as saved: fine

    def swap(config):
        layer_config(config, "td")["layer"] = {"class_name": "Lambda",
                                               "config": {"name": "code", "function": "x"}}

    edit_config(path, swap)
    with pytest.raises(UntrustedModelError, match="'code' \\(Lambda\\)"):
        training.load_model(path)


@pytest.mark.parametrize("activation", [
    "os.system", "system", "eval", "builtins.exec", "tf_keras.activations.relu", "get",
    {"class_name": "function", "config": "system", "module": "os", "registered_name": None},
    {"class_name": "function", "config": "relu", "module": "builtins",
     "registered_name": None},
    {"class_name": "function", "config": "os.system", "module": "keras.activations",
     "registered_name": None}])
def test_activation_must_be_a_keras_larq_or_cbcn_name(lenet_file, tmp_path, activation,
                                                      keras_untouched):
    path = tampered(lenet_file, tmp_path / "m.h5", set_field("predictions", "activation",
                                                             activation))
    with pytest.raises(UntrustedModelError, match="'predictions' \\(Dense\\)"):
        training.load_model(path)


def test_activation_os_system_is_one_line_from_the_cli(lenet_file, tmp_path, run_cli,
                                                      error_line):
    path = tampered(lenet_file, tmp_path / "m.h5",
                    set_field("predictions", "activation", "os.system"))
    assert run_cli("evaluate", path, "--dataset", "digits", "--no-rotated") == 2
    assert_refused_line(error_line(), path, "'predictions' (Dense)")


def test_module_key_outside_keras_is_refused(lenet_file, tmp_path, keras_untouched):
    def foreign_initializer(config):
        layer_config(config, "predictions")["kernel_initializer"] = {
            "module": "os", "class_name": "Zeros", "config": {}, "registered_name": None}

    def shadowing_layer(config):  # a known class name, but Keras would import this module
        for layer in config["config"]["layers"]:
            if layer["name"] == "predictions":
                layer["module"] = "evil_package.layers"

    for edit in (foreign_initializer, shadowing_layer):
        path = tampered(lenet_file, tmp_path / "m.h5", edit)
        with pytest.raises(UntrustedModelError, match="'predictions' \\(Dense\\)"):
            training.load_model(path)


def test_foreign_quantizer_in_a_larq_field_is_refused(lenet_file, tmp_path, keras_untouched):
    @tf.keras.utils.register_keras_serializable(package="elsewhere")
    class Evil(tf.keras.layers.Layer):
        def call(self, inputs):
            return inputs

    @tf.keras.utils.register_keras_serializable(package="elsewhere")
    def steal(x):
        return x

    config = model_files.read_model_config(lenet_file)
    conv = next(layer for layer in config["config"]["layers"]
                if isinstance(layer["config"].get("kernel_quantizer"), dict))
    name = conv["name"]
    quantizer = layer_config(config, name)["kernel_quantizer"]
    edits = [
        set_field(name, "kernel_quantizer", {"class_name": "elsewhere>Evil", "config": {}}),
        set_field(name, "kernel_quantizer", {**copy.deepcopy(quantizer),
                                             "registered_name": "elsewhere>Evil"}),
        set_field(name, "kernel_quantizer", "elsewhere>steal"),
        set_field(name, "kernel_quantizer", "larq.quantizers.ste_sign"),
        set_field(name, "padding_mode", "elsewhere>steal"),
    ]
    for edit in edits:
        path = tampered(lenet_file, tmp_path / "m.h5", edit)
        with pytest.raises(UntrustedModelError, match=f"'{name}'"):
            training.load_model(path)


def test_quantizer_named_by_string_loads(lenet_file, tmp_path):
    config = model_files.read_model_config(lenet_file)
    name = next(layer["name"] for layer in config["config"]["layers"]
                if isinstance(layer["config"].get("kernel_quantizer"), dict))
    path = tampered(lenet_file, tmp_path / "m.h5", set_field(name, "kernel_quantizer",
                                                             "ste_sign"))
    model_files.check_model_file(path)


def test_many_problems_still_give_one_line(lenet_file, tmp_path, run_cli, error_line):
    def edit(config):
        append_layer(op_layer("w1", "io.write_file", "/nonexistent/a", contents="x"))(config)
        append_layer(op_layer("w2", "py_function", "x"))(config)
        layer_config(config, "predictions")["activation"] = "os.system"

    path = tampered(lenet_file, tmp_path / "m.h5", edit)
    assert run_cli("evaluate", path, "--dataset", "digits", "--no-rotated") == 2
    assert_refused_line(error_line(), path, "'predictions' (Dense)")  # the first, in order


# --- what is not a .h5 model ----------------------------------------------------------------


def test_keras_v3_archive_is_named_as_such(tmp_path, run_cli, error_line):
    inputs = tf.keras.Input((4,))
    tf.keras.Model(inputs, tf.keras.layers.Dense(2)(inputs)).save(tmp_path / "m.keras")
    for trust in ((), ("--trust-model",)):
        assert run_cli("evaluate", tmp_path / "m.keras", "--dataset", "digits", *trust) == 2
        err = error_line()
        assert str(tmp_path / "m.keras") in err and ".h5" in err, err
    with pytest.raises(ModelFileError):
        training.load_model(tmp_path / "m.keras", trusted=True)


def test_deeply_nested_config_is_a_damaged_file(lenet_file, tmp_path):
    path = tmp_path / "deep.h5"
    shutil.copy(lenet_file, path)
    with h5py.File(path, "r+") as handle:
        handle.attrs["model_config"] = ("[" * 100000 + "]" * 100000).encode()
    with pytest.raises(ModelFileError, match="damaged model config"):
        training.load_model(path)


# --- the zoo ----------------------------------------------------------------------------------


# make_invariant adds the same layer kinds to every model: LeNet covers each head, ResNet-18
# adds the lifting stem, circulant shortcuts and symmetric downsampling.
ZOO = [(name, {"orientations": 2}) for name in list_models()] + [
    ("cbcn_lenet", {"invariant": True}), ("cbcn_lenet", {"invariant": {"pool": "align"}}),
    ("cbcn_lenet", {"invariant": {"pool": "mean"}}), ("cbcn_resnet18", {"invariant": True})]


@pytest.mark.parametrize("name, kwargs", ZOO, ids=[f"{n}-{k}" for n, k in ZOO])
def test_zoo_models_load_untrusted(name, kwargs, tmp_path):
    """Every zoo model passes the check (the only step trust skips); the LeNets are loaded
    all the way (test_models round-trips every model's config through Keras)."""
    model = create_model(name, input_shape=(32, 32, 3), kernel_stage=(2, 2, 2, 2), **kwargs)
    training.save_model(model, tmp_path / "m.h5")
    assert model_files.untrusted_parts(model_files.read_model_config(tmp_path / "m.h5")) == []
    if "lenet" in name:
        loaded = training.load_model(tmp_path / "m.h5")
        assert [w.shape for w in loaded.weights] == [w.shape for w in model.weights]
