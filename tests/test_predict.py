"""`cbcn predict` / `cbcn_tf.predict`: images prepared as in training (checked against NumPy),
probabilities and top-k against the model run directly, the one-line errors, and Keras vs the
exported LCE model on the MNIST test images."""
import json
import os

import cbcn_tf  # noqa: F401  (Keras 2 before tensorflow)
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from cbcn_tf import data, predict as predict_lib, training
from cbcn_tf.errors import CbcnError
# The MNIST test split (tests/data/mnist, or $CBCN_DATA/mnist): present on every clone.
from tests.reference import MNIST_TEST_ROOT


def _normalise(pixels, dataset):
    """NumPy reference of the evaluation preparation: uint8 -> [0, 1] -> (x - mean) / std."""
    info = data.dataset_info(dataset)
    return ((pixels.astype(np.float64) / 255 - info.mean) / info.std).astype(np.float32)


def _save(path, pixels):
    Image.fromarray(pixels).save(path)
    return str(path)


@pytest.fixture(scope="module")
def digit_pngs(tmp_path_factory):
    """12 digits test images as 16x16 grayscale PNGs in a folder, and their uint8 pixels."""
    folder = tmp_path_factory.mktemp("digits")
    images, _ = data._digits_splits()["test"]
    pixels = np.round(images[:12, ..., 0] * 255).astype(np.uint8)
    for i, image in enumerate(pixels):
        _save(folder / f"{i:02d}.png", image)
    (folder / "notes.txt").write_text("not an image; a folder stands for its images only")
    return folder, pixels


def test_predictions_match_the_model_on_numpy_prepared_images(tiny_run, digit_pngs):
    folder, pixels = digit_pngs
    results = predict_lib.predict(tiny_run, [folder], top_k=10)
    assert [os.path.basename(r.path) for r in results] == [f"{i:02d}.png" for i in range(12)]
    predictor = predict_lib.load_predictor(tiny_run)
    np.testing.assert_allclose(predict_lib.read_images([r.path for r in results], predictor),
                               _normalise(pixels[..., None], "digits"), atol=1e-6)
    model = training.load_model(tiny_run)
    expected = model.predict(_normalise(pixels[..., None], "digits"), verbose=0)
    for result, row in zip(results, expected):
        labels = [t.label for t in result.top]
        probabilities = [t.probability for t in result.top]
        assert sorted(labels) == list(range(10)) and labels[0] == int(np.argmax(row))
        assert [t.name for t in result.top] == [str(label) for label in labels]
        np.testing.assert_allclose(probabilities, row[labels], atol=1e-5)
        assert probabilities == sorted(probabilities, reverse=True)
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)


def test_an_8x8_scan_becomes_the_datasets_16x16_image(tiny_run, tmp_path):
    """scikit-learn's 8x8 scans are served at 16x16; a scan file is resized the same way."""
    from sklearn.datasets import load_digits

    scans = load_digits().images  # 0..16
    order = np.random.default_rng(0).permutation(len(scans))  # as data._digits_splits
    index = order[int(0.8 * len(scans))]  # the first test image
    path = _save(tmp_path / "scan.png", np.round(scans[index] / 16 * 255).astype(np.uint8))
    predictor = predict_lib.load_predictor(tiny_run)
    prepared = predict_lib.read_images([path], predictor)[0]
    info = data.dataset_info("digits")
    dataset_image = (data._digits_splits()["test"][0][0] - info.mean) / info.std
    assert prepared.shape == (16, 16, 1)
    np.testing.assert_allclose(prepared, dataset_image, atol=0.01)  # PNG rounding only


def test_cli_lines_and_json(run_cli, capsys, tiny_run, digit_pngs):
    folder, _ = digit_pngs
    files = [str(folder / "03.png"), str(folder / "00.png")]
    assert run_cli("predict", tiny_run, *files, "--json", "--top-k", "3") == 0
    parsed = json.loads(capsys.readouterr().out)
    expected = predict_lib.predict(tiny_run, files, top_k=3)
    assert [entry["path"] for entry in parsed] == files
    assert parsed == [result.as_dict() for result in expected]
    assert all(len(entry["top"]) == 3 for entry in parsed)
    assert run_cli("predict", tiny_run, *files) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == files
    assert [line.split()[1] for line in lines] == [r.top[0].name for r in expected]
    assert all(len(line.split()) == 1 + 2 * 5 for line in lines)  # top-5: name, percentage


def test_image_folder_model_decodes_with_the_folders_channels(make_folder, tmp_path):
    """An image folder's training decodes every file with the folder's channel count (TFDS),
    so a grayscale file given to an RGB folder's model is read as RGB, as there."""
    from cbcn_tf.models import create_model

    root = make_folder(tmp_path / "pets")  # RGB 8x8 JPEGs, classes cat / dog
    model = create_model("cbcn_lenet", input_shape=(8, 8, 3), num_classes=2, orientations=2,
                         kernel_stage=(2, 2, 2, 2))
    gray = np.random.default_rng(1).integers(0, 256, (8, 8), dtype=np.uint8)
    path = _save(tmp_path / "gray.png", gray)
    result = predict_lib.predict(model, [path], dataset=f"folder:{root}")[0]
    assert {t.name for t in result.top} == {"cat", "dog"}
    info = data.dataset_info(f"folder:{root}")
    rgb = np.repeat(gray[..., None], 3, axis=-1).astype(np.float64) / 255
    expected = model.predict(((rgb - info.mean) / info.std)[None].astype(np.float32),
                             verbose=0)[0]
    assert result.top[0].label == int(np.argmax(expected))
    assert result.top[0].probability == pytest.approx(float(expected.max()), abs=1e-5)


def test_a_model_ending_in_logits_gets_their_softmax(digit_pngs):
    folder, pixels = digit_pngs
    inputs = tf.keras.Input((16, 16, 1))
    logits = tf.keras.layers.Dense(10)(tf.keras.layers.Flatten()(inputs))  # no softmax
    model = tf.keras.Model(inputs, logits)
    result = predict_lib.predict(model, [folder / "05.png"], top_k=10, dataset="digits")[0]
    raw = model.predict(_normalise(pixels[5:6, ..., None], "digits"), verbose=0)[0]
    expected = np.exp(raw - raw.max()) / np.exp(raw - raw.max()).sum()
    by_label = {t.label: t.probability for t in result.top}
    np.testing.assert_allclose([by_label[c] for c in range(10)], expected, atol=1e-6)


def test_errors_are_one_line_naming_the_input(run_cli, error_line, tiny_run, digit_pngs,
                                              tmp_path):
    from cbcn_tf.models import create_model

    folder, pixels = digit_pngs
    good = str(folder / "00.png")
    rgb = _save(tmp_path / "rgb.png", np.repeat(pixels[0][..., None], 3, axis=-1))
    big = _save(tmp_path / "big.png", np.zeros((20, 20), np.uint8))
    text = tmp_path / "notes.png"
    text.write_text("hello")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes((folder / "01.png").read_bytes()[:60])
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        ((tiny_run, str(text)), ["notes.png", "not a PNG or JPEG"]),
        ((tiny_run, rgb), ["rgb.png", "3 channels", "1-channel"]),
        ((tiny_run, big), ["big.png", "20x20", "16x16"]),
        ((tiny_run, str(truncated)), ["cut.png", "Unreadable"]),
        ((tiny_run, str(tmp_path / "missing.png")), ["missing.png"]),
        ((tiny_run, str(empty)), ["empty", "no"]),
        ((str(tmp_path / "no_run"), good), ["no_run"]),
        ((str(tmp_path / "none.tflite"), good), ["none.tflite"]),
        ((tiny_run, good, "--top-k", "0"), ["top_k"]),
    ]
    # An RGB model: a grayscale image is refused (CIFAR-10 images were never files).
    rgb_model = str(tmp_path / "rgb_model.h5")
    training.save_model(create_model("cbcn_lenet", input_shape=(32, 32, 3), orientations=2,
                                     kernel_stage=(2, 2, 2, 2)), rgb_model)
    gray32 = _save(tmp_path / "gray32.png", np.zeros((32, 32), np.uint8))
    cases += [((rgb_model, gray32, "--dataset", "cifar10"), ["gray32.png", "1 channel (",
                                                            "3-channel"]),
              ((rgb_model, gray32), ["rgb_model.h5", "--dataset"]),
              ((rgb_model, good, "--dataset", "digits"), ["rgb_model.h5", "32x32x3"])]
    for args, words in cases:
        assert run_cli("predict", *args) == 2, args
        line = error_line()
        assert all(word in line for word in words), (args, line)
    with pytest.raises(CbcnError):  # the Python API raises the same errors
        predict_lib.predict(tiny_run, [rgb])


def test_packaged_weights_by_name(tmp_path):
    from cbcn_tf import models

    if not hasattr(models, "list_pretrained"):
        pytest.skip("no packaged weights registry in this tree")
    specs = {row["spec"]: row for row in models.list_pretrained()}
    if "cbcn_lenet:mnist" not in specs:
        pytest.skip("cbcn_lenet:mnist is not packaged in this installation")
    pixels = np.random.default_rng(2).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    paths = [_save(tmp_path / f"{i}.png", image) for i, image in enumerate(pixels)]
    results = predict_lib.predict("cbcn_lenet:mnist", paths, top_k=1)
    model = training.load_model("cbcn_lenet:mnist")
    expected = model.predict(_normalise(pixels[..., None], "mnist"), verbose=0).argmax(axis=1)
    assert [r.top[0].label for r in results] == expected.tolist()


# --- Keras vs the exported LCE model on the MNIST test split ---------------------------------


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    from cbcn_tf import config as config_lib

    run = str(tmp_path_factory.mktemp("mnist") / "run")
    # 40 Adam steps on the test split, the one split shipped with the tests: enough for a
    # model far from constant, which is all the Keras vs LCE comparison needs
    config = config_lib.load_config("mnist_lenet", [
        f"data_dir={MNIST_TEST_ROOT}", "epochs=1", "steps_per_epoch=40", "batch_size=64",
        "optimizer=adam", "lr=0.005", "weight_decay=0.0", "train_split=test",
        "eval_split=test", "tensorboard=false", "precise_bn_batches=10", "seed=0"])
    training.train(config, run, verbose=0)
    return run


@pytest.mark.lce
@pytest.mark.slow  # 40 MNIST training steps (mnist_run), 10,000 images through Keras and LCE
def test_keras_and_lce_agree_on_the_mnist_test_images(mnist_run, tmp_path):
    from cbcn_tf.converters import export_lce

    model = training.load_model(mnist_run)
    tflite = os.path.join(mnist_run, "model.tflite")  # in the run folder: its dataset is known
    export_lce(model, tflite)
    keras, lce = predict_lib.load_predictor(mnist_run), predict_lib.load_predictor(tflite)
    assert (keras.dataset, lce.dataset) == ("mnist", "mnist") and lce.gives_probabilities
    images, labels = (np.concatenate(parts) for parts in zip(*(
        (x.numpy(), y.numpy()) for x, y in data.load_dataset(
            "mnist", "test", batch_size=2000, data_dir=MNIST_TEST_ROOT))))
    assert len(images) == 10_000
    top_keras = keras.probabilities(images).argmax(axis=1)
    lce_probabilities = lce.probabilities(images)
    top_lce = lce_probabilities.argmax(axis=1)
    assert np.mean(top_keras == labels) > 0.4  # trained: not the agreement of a constant
    agreement = np.mean(top_keras == top_lce)
    assert agreement >= 0.999, agreement
    # A handful through files: the IDX bytes as PNGs give the pipeline's images exactly.
    from cbcn_tf.data import mnist_idx

    pixels, _ = mnist_idx.load_split(os.path.abspath(MNIST_TEST_ROOT), "test")
    paths = [_save(tmp_path / f"{i}.png", pixels[i, ..., 0]) for i in range(8)]
    results = predict_lib.predict(tflite, paths, top_k=10)
    for i, result in enumerate(results):
        by_label = {t.label: t.probability for t in result.top}
        np.testing.assert_allclose([by_label[c] for c in range(10)], lce_probabilities[i],
                                   atol=1e-6)
