"""MNIST IDX folders (cbcn_tf.data.mnist_idx through cbcn_tf.data): gzipped as published or
gunzipped, each form checked against its own md5, and a folder holding IDX-like files never
falls through to a TFDS download."""
import gzip
import os
import shutil

import numpy as np
import pytest

import cbcn_tf.data as data
import cbcn_tf.data.mnist_idx as mnist_idx
from cbcn_tf.errors import DataError
from tests.reference import MNIST_TEST_ROOT, idx_bytes


def _write_fake_mnist(root, form):
    """Tiny valid MNIST IDX files in ``form`` ("gz", "raw" or "dotted"); returns the arrays."""
    rng = np.random.default_rng(5)
    arrays = {}
    for split, n in (("train", 7), ("test", 4)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for name, array in zip(mnist_idx.MNIST_IDX_FILES[split], (images, labels)):
            gz, raw, dotted = mnist_idx.idx_names(name)
            content = idx_bytes(array)
            if form == "gz":
                (root / gz).write_bytes(gzip.compress(content))
            else:
                (root / (raw if form == "raw" else dotted)).write_bytes(content)
        arrays[split] = (images, labels)
    return arrays


def _pixels(images):
    info = data.dataset_info("mnist")
    return np.round((images * info.std[0] + info.mean[0]) * 255).astype(np.int64)[..., 0]


@pytest.fixture
def no_tfds(monkeypatch):
    """Fail the test if the TFDS builder (download and its retries) is ever reached."""
    def tfds_reached(*args, **kwargs):
        raise AssertionError("fell through to the TFDS builder")

    monkeypatch.setattr(data, "_prepared_tfds_builder", tfds_reached)
    mnist_idx.load_split.cache_clear()
    yield
    mnist_idx.load_split.cache_clear()


@pytest.mark.parametrize("form", ["gz", "raw", "dotted"])
def test_gzipped_and_gunzipped_idx_files_load_the_same_arrays(form, tmp_path, monkeypatch,
                                                              no_tfds):
    arrays = _write_fake_mnist(tmp_path, form)
    monkeypatch.setattr(mnist_idx, "MNIST_IDX_MD5", {})  # fake files: no published md5
    for split in ("train", "test"):
        x, y = zip(*data.load_dataset("mnist", split, data_dir=str(tmp_path), batch_size=32))
        np.testing.assert_array_equal(_pixels(np.concatenate(x)), arrays[split][0])
        np.testing.assert_array_equal(np.concatenate(y), arrays[split][1])


@pytest.mark.parametrize("form, expected_md5", [
    ("gz", "9fb629c4189551a2d022fa330f9573f3"),    # the published .gz
    ("raw", "2646ac647ad5339dbf082846283269ea"),   # the same file gunzipped
])
def test_each_form_is_checked_against_its_own_md5(form, expected_md5, tmp_path, no_tfds):
    _write_fake_mnist(tmp_path, form)
    with pytest.raises(DataError) as info:
        data.load_dataset("mnist", "test", data_dir=str(tmp_path))
    message = str(info.value)
    assert "t10k-images" in message and "damaged" in message and expected_md5 in message
    assert "\n" not in message


def test_missing_or_misnamed_idx_files_are_named_not_downloaded(tmp_path, monkeypatch, no_tfds):
    monkeypatch.setattr(mnist_idx, "MNIST_IDX_MD5", {})
    _write_fake_mnist(tmp_path, "raw")
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz is missing"):
        data.load_dataset("mnist", "test", data_dir=str(tmp_path))
    # Files with the IDX markers under other names: still an IDX folder, never TFDS.
    other = tmp_path / "renamed"
    other.mkdir()
    for path in tmp_path.glob("*ubyte"):
        shutil.copy(path, other / f"mnist-{path.name}")
    mnist_idx.load_split.cache_clear()
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz is missing"):
        data.load_dataset("mnist", "train", data_dir=str(other))


def test_real_gunzipped_files_match_the_published_ones(tmp_path, no_tfds):
    for name in mnist_idx.MNIST_IDX_FILES["test"]:
        with gzip.open(os.path.join(MNIST_TEST_ROOT, name)) as source:
            (tmp_path / name[:-3]).write_bytes(source.read())
    gunzipped = [np.concatenate(part) for part in
                 zip(*data.load_dataset("mnist", "test", data_dir=str(tmp_path), batch_size=5000))]
    published = [np.concatenate(part) for part in
                 zip(*data.load_dataset("mnist", "test", data_dir=MNIST_TEST_ROOT,
                                        batch_size=5000))]
    for a, b in zip(gunzipped, published):
        np.testing.assert_array_equal(a, b)
    assert len(gunzipped[1]) == 10_000


def test_a_folder_with_the_test_files_only_serves_the_test_split(tmp_path, monkeypatch,
                                                                  capsys, no_tfds):
    """Each split needs only its own two files: evaluating on "test" works without the
    training files, and reading "train" there is one line naming the missing file."""
    from cbcn_tf import cli, training
    from cbcn_tf.models import create_model

    monkeypatch.setattr(mnist_idx, "MNIST_IDX_MD5", {})
    arrays = _write_fake_mnist(tmp_path, "gz")
    for name in mnist_idx.MNIST_IDX_FILES["train"]:
        (tmp_path / name).unlink()
    x, y = zip(*data.load_dataset("mnist", "test", data_dir=str(tmp_path), batch_size=32))
    np.testing.assert_array_equal(_pixels(np.concatenate(x)), arrays["test"][0])
    np.testing.assert_array_equal(np.concatenate(y), arrays["test"][1])
    with pytest.raises(DataError) as info:
        data.load_dataset("mnist", "train", data_dir=str(tmp_path))
    message = str(info.value)
    assert f"{tmp_path / 'train-images-idx3-ubyte.gz'} is missing" in message
    assert "train-labels-idx1-ubyte.gz" in message and "\n" not in message

    model = create_model("cbcn_lenet", input_shape=(28, 28, 1), kernel_stage=(2, 2, 2, 2),
                         orientations=2)
    training.save_model(model, tmp_path / "m.h5")
    assert cli.main(["evaluate", str(tmp_path / "m.h5"), "--dataset", "mnist", "--data-dir",
                     str(tmp_path), "--split", "test", "--no-rotated"]) == 0
    capsys.readouterr()
    assert cli.main(["train", "--config", "mnist_lenet", "--output", str(tmp_path / "run"),
                     "--set", f"data_dir={tmp_path}", "--set", "epochs=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cbcn: error: MNIST file ") and "\n" not in err
    assert "train-images-idx3-ubyte.gz is missing" in err
