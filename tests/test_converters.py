"""LCE / TFLite export: op audit, parity with Keras, refusals, atomic writes, sizes, benchmark."""
import os
import subprocess
import sys
import textwrap

import cbcn_tf  # noqa: F401  (Keras 2 before tensorflow)
import larq as lq
import larq_compute_engine as lce
import numpy as np
import pytest
import tensorflow as tf

from cbcn_tf.converters import (FloatFallbackWarning, Parity, audit_ops, benchmark_tflite,
                                export_lce, export_tflite, lce_flatbuffer, materialize_cbconv,
                                random_inputs, size_report)
from cbcn_tf.converters import export as export_module
from cbcn_tf.layers import CBConv2D
from cbcn_tf.models import create_model, list_models
from tests.reference import randomize_statistics

pytestmark = pytest.mark.lce  # every test here converts or refuses to convert


@pytest.fixture(autouse=True)
def _seed():
    tf.keras.utils.set_random_seed(0)


def bn_prelu(x):
    x = tf.keras.layers.BatchNormalization()(x)
    return tf.keras.layers.PReLU(tf.keras.initializers.Constant(0.25), shared_axes=[1, 2])(x)


def cbcn_net(orientations=4, size=16, strides=(1, 2), **cbconv_kwargs):
    """Float stem -> [BN -> CBConv2D -> BN -> PReLU] per stride -> pool -> dense logits."""
    inputs = tf.keras.Input((size, size, 3))
    x = bn_prelu(tf.keras.layers.Conv2D(8 * orientations, 3, padding="same")(inputs))
    for i, stride in enumerate(strides):
        x = tf.keras.layers.BatchNormalization()(x)
        x = CBConv2D(8, 3, orientations=orientations, strides=stride, name=f"cb{i}",
                     **cbconv_kwargs)(x)
        x = bn_prelu(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    return randomize_statistics(tf.keras.Model(inputs, tf.keras.layers.Dense(10)(x)))


def assert_exported(result, path, bconvs):
    assert result.ops["LceBconv2d"] == bconvs == len(result.binary_layers)
    assert result.float_binary_layers == ()
    assert result.parity.ok and result.parity.mismatched == 0, result.parity
    assert os.path.getsize(path) == result.bytes


@pytest.mark.parametrize("orientations", [1, 2, 4, 8])
def test_cbconv_export_audit_and_parity(tmp_path, orientations):
    path = tmp_path / "model.tflite"
    result = export_lce(cbcn_net(orientations), path)
    assert_exported(result, path, 2)
    assert result.ops["CONV_2D"] == 1  # only the float stem


def test_stride2_on_even_sizes_parity(tmp_path):
    """Stride 2 on even sizes (16 -> 8 -> 4 -> 2) is where a symmetric (1, 1) pad would
    convert but give silently wrong outputs; TF-SAME pads (0, 1)."""
    path = tmp_path / "model.tflite"
    assert_exported(export_lce(cbcn_net(4, 16, strides=(2, 2, 2)), path), path, 3)


@pytest.mark.parametrize("scale", ["channel_mean", None])  # "layer_mean" is the default
def test_scale_variants(tmp_path, scale):
    path = tmp_path / "model.tflite"
    assert_exported(export_lce(cbcn_net(4, scale=scale), path), path, 2)


def test_tied_bias_and_zero_padding(tmp_path):
    path = tmp_path / "model.tflite"
    model = cbcn_net(4, tied=True, use_bias=True, pad_values=0.0)
    model.get_layer("cb0").bias.assign(np.linspace(-1, 1, 32))
    assert_exported(export_lce(model, path), path, 2)


def test_materialized_clone_is_identical():
    model = cbcn_net(4, scale="channel_mean")
    clone = materialize_cbconv(model)
    assert isinstance(clone.get_layer("cb0_binary"), lq.layers.QuantConv2D)
    assert clone.get_layer("cb0").scale.shape == (32,)  # rank 1, even for a scalar alpha
    x = random_inputs([model.input.shape], 4)[0]
    # Same +-1 products; oneDNN may sum a float conv in another order (ulp-level).
    np.testing.assert_allclose(model(x), clone(x), rtol=1e-5, atol=1e-5)

    sequential = tf.keras.Sequential([tf.keras.Input((8, 8, 4)), CBConv2D(2, 3, name="cb")])
    clone = materialize_cbconv(sequential)
    assert [layer.name for layer in clone.layers] == ["cb_binary", "cb"]
    x = random_inputs([(1, 8, 8, 4)], 2)[0]
    np.testing.assert_allclose(sequential(x), clone(x), rtol=1e-5, atol=1e-5)


def test_k1_cbconv_equals_quantconv2d(tmp_path):
    inputs = tf.keras.Input((16, 16, 32))
    cbconv = CBConv2D(16, 3, orientations=1, scale=None, kernel_quantizer="ste_sign")
    cb_model = tf.keras.Model(inputs, cbconv(inputs))
    quant = lq.layers.QuantConv2D(16, 3, padding="same", pad_values=1.0, use_bias=False,
                                  input_quantizer="approx_sign", kernel_quantizer="ste_sign",
                                  kernel_constraint="weight_clip")
    quant_model = tf.keras.Model(inputs, quant(inputs))
    quant.set_weights([np.sign(cbconv.get_weights()[0][:, :, :, 0, :])])

    x = random_inputs([(1, 16, 16, 32)], 4)[0]
    outputs = []
    for name, model in (("cb", cb_model), ("quant", quant_model)):
        path = tmp_path / f"{name}.tflite"
        assert export_lce(model, path).ops["LceBconv2d"] == 1
        outputs.append(lce.testing.Interpreter(path.read_bytes()).predict(x))
    np.testing.assert_array_equal(*outputs)


def _small_zoo_model(name, binary=True):
    kwargs = dict(kernel_stage=(8, 8, 8, 8), binary=binary)
    if name == "cbcn_resnet18_imagenet":
        kwargs.update(input_shape=(64, 64, 3), num_classes=10)
    elif name != "cbcn_lenet":
        kwargs.update(input_shape=(32, 32, 3))
    return create_model(name, **kwargs)


@pytest.mark.parametrize("name", list_models())
def test_registry_model_exports(tmp_path, name):
    path = tmp_path / f"{name}.tflite"
    model = randomize_statistics(_small_zoo_model(name))
    result = export_lce(model, path)
    # every QuantConv2D (CBConv2D included) of the zoo is binary
    binary = [layer.name for layer in model.layers if isinstance(layer, lq.layers.QuantConv2D)]
    assert result.ops["LceBconv2d"] == len(binary) > 0
    assert result.binary_layers == tuple(binary)
    assert result.float_binary_layers == () and result.parity.ok
    assert os.path.getsize(path) == result.bytes


def _binary_quantconv_with_tf_sign():
    class TfSign(lq.quantizers.Quantizer):
        precision = 1  # claims 1 bit, but LCE only recognises larq's sign

        def call(self, inputs):
            return tf.sign(inputs)

    inputs = tf.keras.Input((8, 8, 32))
    x = lq.layers.QuantConv2D(32, 3, padding="same", input_quantizer=TfSign(),
                              kernel_quantizer="ste_sign", name="tf_sign_conv")(inputs)
    return tf.keras.Model(inputs, x)


def _binary_dense():
    inputs = tf.keras.Input((8, 8, 32))
    x = CBConv2D(8, 3, name="cb")(inputs)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    x = lq.layers.QuantDense(10, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                             name="binary_dense")(x)
    return tf.keras.Model(inputs, x)


@pytest.mark.parametrize("build, layer", [(_binary_quantconv_with_tf_sign, "tf_sign_conv"),
                                          (_binary_dense, "binary_dense")])
def test_binary_layer_left_in_float(tmp_path, build, layer):
    path = tmp_path / "model.tflite"
    model = build()
    with pytest.raises(ValueError, match=f"{layer} .*strict=False"):
        export_lce(model, path)
    assert not path.exists()
    with pytest.warns(FloatFallbackWarning, match=layer):
        result = export_lce(model, path, strict=False)
    assert layer in result.float_binary_layers[0] and path.exists()


def test_ops_lce_cannot_run_are_refused(tmp_path):
    inputs = tf.keras.Input((4, 4, 2))
    x = tf.keras.layers.Lambda(lambda t: tf.linalg.svd(t)[0], name="svd")(inputs)
    with pytest.raises(ValueError, match="neither TFLite nor LCE can run: Svd"):
        export_lce(tf.keras.Model(inputs, x), tmp_path / "model.tflite")


def test_mixed_precision_refused(tmp_path):
    tf.keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = tf.keras.Sequential([tf.keras.Input((8, 8, 4)), CBConv2D(2, 3)])
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    with pytest.raises(ValueError, match="set_global_policy\\('float32'\\)"):
        export_lce(model, tmp_path / "model.tflite")


def test_dynamic_input_and_subclassed_models_refused(tmp_path):
    inputs = tf.keras.Input((None, None, 4))
    with pytest.raises(ValueError, match="fixed size"):
        export_lce(tf.keras.Model(inputs, CBConv2D(2, 3)(inputs)), tmp_path / "a.tflite")

    class Subclassed(tf.keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = CBConv2D(2, 3)

        def call(self, x):
            return self.conv(x)

    model = Subclassed()
    model(tf.zeros((1, 8, 8, 4)))
    with pytest.raises(ValueError, match="functional or Sequential"):
        materialize_cbconv(model)


@pytest.mark.subprocess
def test_keras3_model_refused(tmp_path):
    fake = type("Functional", (), {"__module__": "keras.src.models.functional"})()
    with pytest.raises(TypeError, match="Keras 3"):
        export_lce(fake, tmp_path / "model.tflite")
    # A real Keras 3 model, in a clean process that does not select Keras 2 up front.
    script = textwrap.dedent(f"""
        import cbcn_tf, keras
        from cbcn_tf.converters import export_lce
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        try:
            export_lce(model, {str(tmp_path / "k3.tflite")!r})
        except TypeError as exc:
            print("REFUSED" if "Keras 3" in str(exc) else exc)
    """)
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=180)
    assert "REFUSED" in run.stdout, run.stderr[-2000:]
    assert not (tmp_path / "k3.tflite").exists()


def test_atomic_write_on_failures(tmp_path, monkeypatch):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"previous export")
    model = cbcn_net(2, strides=(1,))

    failing = Parity(sample_diffs=(1.0,) * 8, output_scale=1.0, tolerance=0.002)
    monkeypatch.setattr(export_module, "check_parity", lambda *args, **kwargs: failing)
    with pytest.raises(ValueError, match="differs from Keras"):
        export_lce(model, path)
    monkeypatch.undo()

    def broken_converter(*args, **kwargs):
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(export_module.lce, "convert_saved_model", broken_converter)
    with pytest.raises(ValueError, match="converter crashed"):
        export_lce(model, path)
    monkeypatch.undo()

    def broken_replace(*args):
        raise OSError("disk full")

    monkeypatch.setattr(export_module.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        export_lce(model, path, verify=False)
    monkeypatch.undo()

    assert path.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite"]  # no temp files


def test_float_twin_export(tmp_path):
    path = tmp_path / "twin.tflite"
    result = export_tflite(randomize_statistics(_small_zoo_model("cbcn_lenet", False)), path)
    assert result.parity.ok and result.parity.mismatched == 0
    assert "LceBconv2d" not in result.ops and result.ops["CONV_2D"] == 4
    assert audit_ops(path.read_bytes()).counts == result.ops


def test_cifar_resnet18_size_ratio():
    report = size_report(create_model("cbcn_resnet18"),
                         create_model("cbcn_resnet18", binary=False))
    assert report.ratio <= 1 / 8, report
    assert report.deployed_binary_weights == 4 * report.learned_binary_weights
    # larq counts the learned W; the file holds sign(E), K times more bits (and BN folded).
    assert report.larq_predicted_bytes < 0.6 * report.lce_bytes
    assert report.cbcn_predicted_bytes == pytest.approx(report.lce_bytes, rel=0.1)
    assert report.float_predicted_bytes == pytest.approx(report.float_bytes, rel=0.01)


def test_benchmark_report(tmp_path):
    lce_bytes = lce_flatbuffer(cbcn_net(2, strides=(1,)))
    export_tflite(cbcn_net(2, strides=(1,)), tmp_path / "float.tflite", verify=False)
    report = benchmark_tflite(lce_bytes, runs=3, warmup=1, threads=(1,),
                              baseline=tmp_path / "float.tflite")
    assert [(r.model, r.kernel) for r in report.rows] == [
        ("model", "default"), ("model", "indirect_bgemm"), ("model", "reference"),
        ("float twin", "xnnpack")]
    assert all(r.runs == 3 and 0 < r.min_ms <= r.median_ms <= r.p90_ms for r in report.rows)
    assert report.best("float twin").runtime == "tflite+xnnpack"
    assert "not those of a phone" in report.to_markdown()
    report.to_csv(tmp_path / "bench.csv")
    report.to_json(tmp_path / "bench.json")
    assert (tmp_path / "bench.csv").read_text().count("\n") == 5
    with pytest.raises(ValueError, match="Unknown kernels"):
        benchmark_tflite(lce_bytes, kernels=("fast",))


@pytest.fixture(scope="module")
def tflite_file(tmp_path_factory):
    from cbcn_tf.converters import export_lce

    path = tmp_path_factory.mktemp("tflite") / "m.tflite"
    export_lce(create_model("cbcn_lenet", input_shape=(16, 16, 1), orientations=2,
                            kernel_stage=(2, 2, 2, 2)), str(path), verify=False)
    return path


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
