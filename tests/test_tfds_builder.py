"""A real TFDS builder (not `tfds.testing.mock_data`): TFDS's own ``mnist`` builder prepared
offline from the original files in ``$CBCN_DATA/mnist``, and the one-line error when
TFDS data is neither prepared nor downloadable."""
import gzip
import os

import cbcn_tf  # noqa: F401  (Keras 2 before tensorflow)
import numpy as np
import pytest

from cbcn_tf import cli, data
from cbcn_tf.errors import DataError
from tests.reference import MNIST_FILES, MNIST_ROOT, NEEDS_DATA


def _idx(path):
    """NumPy reference reader of an IDX file (big-endian header, then uint8 data)."""
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


@pytest.fixture(scope="module")
def mnist_data_dir(tmp_path_factory):
    if MNIST_ROOT is None:  # TFDS prepares both splits: it needs the four files
        pytest.skip(NEEDS_DATA)
    data_dir = tmp_path_factory.mktemp("tfds")
    manual = data_dir / "downloads" / "manual"
    manual.mkdir(parents=True)
    for name in MNIST_FILES:  # what the README tells users: the original files in downloads/manual
        os.symlink(os.path.join(MNIST_ROOT, name), manual / name)
    return data_dir


@pytest.mark.slow  # TFDS prepares all 70,000 MNIST images (mnist_data_dir)
def test_tfds_mnist_builder_prepares_from_local_files(mnist_data_dir):
    ds = data.load_dataset("mnist", "test", batch_size=10_000, data_dir=str(mnist_data_dir))
    images, labels = next(iter(ds))
    reference_images = _idx(os.path.join(MNIST_ROOT, "t10k-images-idx3-ubyte.gz"))
    reference_labels = _idx(os.path.join(MNIST_ROOT, "t10k-labels-idx1-ubyte.gz"))
    assert images.shape == (10_000, 28, 28, 1) and labels.dtype.name == "int64"
    # TFDS shuffles the examples when it prepares them: match every image to the raw IDX
    # bytes (after undoing the normalisation) and check its label.
    pixels = np.round((images.numpy()[..., 0] * 0.3081 + 0.1307) * 255).astype(np.uint8)
    label_of = {}
    for image, label in zip(reference_images, reference_labels):
        label_of.setdefault(image.tobytes(), set()).add(int(label))
    assert all(int(label) in label_of.get(image.tobytes(), ())
               for image, label in zip(pixels, labels.numpy()))
    np.testing.assert_array_equal(np.bincount(labels.numpy(), minlength=10),
                                  np.bincount(reference_labels, minlength=10))
    assert (mnist_data_dir / "mnist" / "3.0.1" / "dataset_info.json").is_file()


@pytest.mark.slow  # TFDS prepares all 70,000 MNIST images (mnist_data_dir)
def test_cli_evaluates_on_the_prepared_builder(mnist_data_dir, tmp_path, capsys):
    from cbcn_tf import training
    from cbcn_tf.models import create_model

    model = create_model("cbcn_lenet", input_shape=(28, 28, 1), kernel_stage=(2, 2, 2, 2),
                         orientations=2)
    training.save_model(model, tmp_path / "m.h5")
    assert cli.main(["evaluate", str(tmp_path / "m.h5"), "--dataset", "mnist", "--data-dir",
                     str(mnist_data_dir), "--no-rotated", "--batch-size", "1000"]) == 0
    assert "test" in capsys.readouterr().out


def test_unprepared_tfds_data_without_network_is_one_line(tmp_path, monkeypatch, capsys):
    """No prepared data, no manual files, downloads refused: one line naming the folder."""
    from tensorflow_datasets.core.download import downloader

    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # nothing listens: refused
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setattr(downloader, "MAX_RETRIES", 0)
    empty = tmp_path / "tfds"
    with pytest.raises(DataError) as info:
        data.load_dataset("mnist", "test", data_dir=str(empty))
    message = str(info.value)
    assert f"TFDS has no prepared 'mnist' in {empty}/mnist/3.0.1" in message
    assert f"{empty}/downloads/manual" in message and "image_folder" in message
    model_dir = tmp_path / "m.h5"
    from cbcn_tf import training
    from cbcn_tf.models import create_model

    training.save_model(create_model("cbcn_lenet", input_shape=(28, 28, 1)), model_dir)
    assert cli.main(["evaluate", str(model_dir), "--dataset", "mnist", "--data-dir",
                     str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cbcn: error: TFDS has no prepared 'mnist'") and "\n" not in err
