"""Tests for cbcn_tf.data: offline only (scikit-learn digits, TFDS mock data, tmp folders)."""
import collections
import math
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

import cbcn_tf.data as data
import cbcn_tf.data.mnist_idx as mnist_idx
from tests.reference import CIFAR_ROOT, MNIST_ROOT, MNIST_TEST_ROOT, NEEDS_DATA, idx_bytes


def collect(ds):
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(images), np.concatenate(labels)


def keys(images, labels):
    """Multiset of examples (pixel values rounded to survive normalisation round trips)."""
    return collections.Counter(
        (np.round(x, 3).tobytes(), int(y)) for x, y in zip(images, labels)
    )


# --- registry ---------------------------------------------------------------------------------


def test_list_datasets_and_unknown_name():
    assert {"digits", "mnist", "cifar10", "cifar100", "imagenet2012"} <= set(data.list_datasets())
    with pytest.raises(ValueError, match="'nope'.*cifar10"):
        data.load_dataset("nope", "train")


# --- digits -----------------------------------------------------------------------------------


def test_digits_shapes_dtypes_and_partition():
    from sklearn.datasets import load_digits

    info = data.dataset_info("digits")
    splits = {}
    for split in ("train", "test"):
        images, labels = collect(data.load_dataset("digits", split, batch_size=100))
        assert images.shape[1:] == info.input_shape == (16, 16, 1)
        assert images.dtype == np.float32 and labels.dtype == np.int64
        assert set(labels) == set(range(10))
        splits[split] = images * info.std[0] + info.mean[0], labels
    assert len(splits["train"][0]) == 1437 and len(splits["test"][0]) == 360

    digits = load_digits()
    raw = tf.image.resize(digits.images[..., None] / 16.0, (16, 16)).numpy()
    assert keys(*splits["train"]) + keys(*splits["test"]) == keys(raw, digits.target)


def test_digits_train_is_normalised():
    images, _ = collect(data.load_dataset("digits", "train", batch_size=512))
    assert abs(images.mean()) < 0.01 and abs(images.std() - 1) < 0.01


def test_training_pipeline_is_seeded():
    def first_batch(seed):
        ds = data.load_dataset("digits", "train", batch_size=32, training=True, seed=seed)
        return next(iter(ds))[0].numpy()

    np.testing.assert_array_equal(first_batch(1), first_batch(1))
    assert not np.array_equal(first_batch(1), first_batch(2))


@pytest.mark.parametrize("rotate", [False, True])
def test_input_context_shards_and_splits_batch(rotate):
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1,
                                         num_replicas_in_sync=2)
    sharded = data.load_dataset("digits", "test", batch_size=64, input_context=context,
                                rotate=rotate)
    assert next(iter(sharded))[0].shape[0] == 32
    full, _ = collect(data.load_dataset("digits", "test", batch_size=64, rotate=rotate))
    np.testing.assert_array_equal(collect(sharded)[0], full[1::2])


# --- rotation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [9, 10])
def test_rotate_90_degrees_matches_rot90(size):
    image = np.random.default_rng(size).random((size, size, 2)).astype(np.float32)
    rotated = data.rotate_images(image[None], [math.pi / 2])[0].numpy()
    np.testing.assert_allclose(rotated[1:-1, 1:-1], np.rot90(image)[1:-1, 1:-1], atol=1e-4)


def test_rotate_zero_is_identity_and_corners_are_zero():
    images = np.random.default_rng(0).random((2, 8, 8, 3)).astype(np.float32) + 1
    np.testing.assert_allclose(data.rotate_images(images, 0.0).numpy(), images, atol=1e-6)
    rotated = data.rotate_images(images, math.pi / 4).numpy()
    assert np.all(rotated[:, 0, 0] == 0)


def test_rotated_dataset_is_repeatable_and_independent_of_batching():
    rotated, labels = collect(data.load_dataset("digits", "test", batch_size=64, rotate=True))
    again, _ = collect(data.load_dataset("digits", "test", batch_size=7, rotate=True))
    plain, plain_labels = collect(data.load_dataset("digits", "test", batch_size=64))
    np.testing.assert_array_equal(rotated, again)
    np.testing.assert_array_equal(labels, plain_labels)
    assert np.abs(rotated - plain).mean() > 0.1
    other_seed, _ = collect(data.load_dataset("digits", "test", batch_size=64, rotate=True, seed=1))
    assert not np.array_equal(rotated, other_seed)


def test_rotated_digits_use_per_example_angles_within_45_degrees():
    info = data.dataset_info("digits")

    def take(rotate):
        return collect(data.load_dataset("digits", "test", rotate=rotate))[0][:32]

    plain, rotated = (x * info.std[0] + info.mean[0] for x in (take(False), take(True)))
    # Recover each example's angle by matching against a 1-degree grid of rotations.
    grid = np.arange(-50, 51)
    candidates = data.rotate_images(np.repeat(plain, len(grid), axis=0),
                                    np.tile(np.radians(grid), len(plain))).numpy()
    candidates = candidates.reshape(len(plain), len(grid), -1)
    errors = np.abs(candidates - rotated.reshape(len(plain), 1, -1))
    angles = grid[errors.mean(axis=2).argmin(axis=1)]
    assert np.all(np.abs(angles) <= 45) and angles.max() - angles.min() > 45


# --- TFDS (mocked: never downloads) -----------------------------------------------------------


@pytest.mark.parametrize("name,shape", [("cifar10", (32, 32, 3)), ("mnist", (28, 28, 1)),
                                        ("imagenet2012", (224, 224, 3))])
@pytest.mark.parametrize("training", [False, True])
def test_tfds_datasets_through_mock_data(tmp_path, name, shape, training):
    split = data.dataset_info(name).splits[-1]
    with tfds.testing.mock_data(num_examples=4 if name == "imagenet2012" else 16):
        ds = data.load_dataset(name, split, batch_size=4, training=training, rotate=training,
                               data_dir=str(tmp_path))
        images, labels = next(iter(ds))
    assert images.shape == (4, *shape) and images.dtype == tf.float32
    assert labels.dtype == tf.int64
    assert np.all((labels.numpy() >= 0) & (labels.numpy() < data.dataset_info(name).num_classes))


# --- image folders ----------------------------------------------------------------------------


def test_image_folder_loads(tmp_path, make_folder):
    root = make_folder(tmp_path / "imgs")
    info = data.dataset_info(f"folder:{root}")
    assert info.num_classes == 2 and info.input_shape == (8, 8, 3) and info.splits == ("train",)
    ds = data.load_dataset(f"folder:{root}", "train", batch_size=4, training=True)
    images, labels = collect(ds)
    assert images.shape == (6, 8, 8, 3) and sorted(labels) == [0, 0, 0, 1, 1, 1]

    gray = make_folder(tmp_path / "gray", mode="L")
    images, _ = collect(data.load_dataset("image_folder", "train", data_dir=str(gray)))
    assert images.shape == (6, 8, 8, 1)


def _empty_class(root, make_folder):
    os.makedirs(root / "train" / "cat")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    make_folder(root, classes=("dog",))
    return "train/cat"


def _corrupt_jpeg(root, make_folder):
    make_folder(root)
    (root / "train" / "dog" / "1.jpg").write_bytes(b"definitely not a jpeg" * 10)
    return "train/dog/1.jpg"


def _truncated_jpeg(root, make_folder):
    make_folder(root)
    path = root / "train" / "cat" / "2.jpg"
    path.write_bytes(path.read_bytes()[:-2])
    return "train/cat/2.jpg"


def _mixed_sizes(root, make_folder):
    make_folder(root, sizes=((8, 8), (8, 8), (9, 8)))
    return "train/cat/2.jpg"


def _missing_split(root, make_folder):
    make_folder(root)
    return "['train']"


@pytest.mark.parametrize("corrupt", [_empty_class, _corrupt_jpeg, _truncated_jpeg, _mixed_sizes,
                                     _missing_split])
def test_image_folder_errors_name_the_problem(tmp_path, corrupt, make_folder):
    root = tmp_path / "imgs"
    offending = corrupt(root, make_folder)
    split = "test" if corrupt is _missing_split else "train"
    with pytest.raises(ValueError) as error:
        data.load_dataset(f"folder:{root}", split)
    assert offending in str(error.value)


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(ValueError, match=str(tmp_path / "absent")):
        data.load_dataset(f"folder:{tmp_path / 'absent'}", "train")
    with pytest.raises(ValueError, match="data_dir"):
        data.load_dataset("image_folder", "train")


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


# --- validation_fraction ----------------------------------------------------------------------


def test_validation_fraction_partitions_train_deterministically():
    def load(split, seed=0):
        return collect(data.load_dataset("digits", split, batch_size=256, seed=seed,
                                         validation_fraction=0.1))

    train, validation = load("train"), load("validation")
    assert len(train[0]) == 1437 - 144 and len(validation[0]) == 144
    assert keys(*train) + keys(*validation) == keys(*collect(data.load_dataset("digits", "train")))
    np.testing.assert_array_equal(load("validation")[0], validation[0])
    # The split never depends on seed, so seed sweeps cannot leak validation data into training.
    np.testing.assert_array_equal(load("validation", seed=3)[0], validation[0])
    test = collect(data.load_dataset("digits", "test", validation_fraction=0.1))
    assert len(test[0]) == 360


def test_validation_split_needs_fraction():
    with pytest.raises(ValueError, match="validation_fraction"):
        data.load_dataset("digits", "validation")


def test_validation_fraction_on_folder(tmp_path, make_folder):
    root = make_folder(tmp_path / "imgs", sizes=((8, 8),) * 5)
    sizes = [len(collect(data.load_dataset(f"folder:{root}", split, validation_fraction=0.2))[0])
             for split in ("train", "validation")]
    assert sizes == [8, 2]


@pytest.mark.skipif(CIFAR_ROOT is None, reason=NEEDS_DATA)
def test_real_cifar10_folder():
    name = f"folder:{CIFAR_ROOT}"
    assert data.dataset_info(name).num_classes == 10
    ds = data.load_dataset(name, "validation", batch_size=16, validation_fraction=0.1)
    assert ds.cardinality() == math.ceil(5000 / 16)
    images, labels = next(iter(ds))
    assert images.shape == (16, 32, 32, 3)
    assert np.all((labels.numpy() >= 0) & (labels.numpy() < 10))


# --- MNIST from the original IDX files ---------------------------------------------------------




def _parse_idx_numpy(path):
    """Independent reference parser: gzip + a fixed 16 / 8 byte header, NumPy big-endian dims."""
    import gzip

    raw = gzip.open(path).read()
    ndim = raw[3]
    dims = np.frombuffer(raw[4:4 + 4 * ndim], dtype=">i4")
    return np.frombuffer(raw[4 + 4 * ndim:], dtype=np.uint8).reshape(dims)


def _fake_mnist(root, n_train=12, n_test=5):
    import gzip

    rng = np.random.default_rng(3)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for name, array in zip(mnist_idx.MNIST_IDX_FILES[split], (images, labels)):
            (root / name).write_bytes(gzip.compress(idx_bytes(array)))
        arrays[split] = (images, labels)
    return arrays


def _unnormalise(images):
    info = data.dataset_info("mnist")
    return np.round((images * info.std[0] + info.mean[0]) * 255).astype(np.int64)


def test_mnist_idx_folder_matches_the_raw_bytes(tmp_path, monkeypatch):
    arrays = _fake_mnist(tmp_path)
    monkeypatch.setattr(mnist_idx, "MNIST_IDX_MD5", {})  # fake files: no published md5
    for split in ("train", "test"):
        images, labels = collect(data.load_dataset("mnist", split, data_dir=str(tmp_path),
                                                   batch_size=4))
        assert images.shape == (len(arrays[split][0]), 28, 28, 1)
        np.testing.assert_array_equal(_unnormalise(images)[..., 0], arrays[split][0])
        np.testing.assert_array_equal(labels, arrays[split][1])


def test_mnist_idx_bad_files_name_the_file(tmp_path, monkeypatch):
    import gzip

    _fake_mnist(tmp_path)
    monkeypatch.setattr(mnist_idx, "MNIST_IDX_MD5", {})
    mnist_idx.load_split.cache_clear()
    path = tmp_path / mnist_idx.MNIST_IDX_FILES["test"][0]
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-7]))  # truncated
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz .*truncated"):
        data.load_dataset("mnist", "test", data_dir=str(tmp_path))
    (tmp_path / mnist_idx.MNIST_IDX_FILES["test"][1]).unlink()
    mnist_idx.load_split.cache_clear()
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz is missing"):
        data.load_dataset("mnist", "test", data_dir=str(tmp_path))


def test_mnist_idx_md5_mismatch_is_refused(tmp_path, monkeypatch):
    _fake_mnist(tmp_path)
    mnist_idx.load_split.cache_clear()
    with pytest.raises(ValueError, match="is damaged \\(md5 .*expected"):
        data.load_dataset("mnist", "train", data_dir=str(tmp_path))


def test_real_mnist_matches_numpy_parse_of_the_idx_files():
    images, labels = collect(data.load_dataset("mnist", "test", data_dir=MNIST_TEST_ROOT,
                                               batch_size=2000))
    reference_images = _parse_idx_numpy(os.path.join(MNIST_TEST_ROOT,
                                                      "t10k-images-idx3-ubyte.gz"))
    reference_labels = _parse_idx_numpy(os.path.join(MNIST_TEST_ROOT,
                                                      "t10k-labels-idx1-ubyte.gz"))
    np.testing.assert_array_equal(_unnormalise(images)[..., 0], reference_images)
    np.testing.assert_array_equal(labels, reference_labels)
    # Published label counts of the test split (the files' README).
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.skipif(MNIST_ROOT is None, reason=NEEDS_DATA)
def test_real_mnist_validation_split_and_rotation():
    train = data.load_dataset("mnist", "train", data_dir=MNIST_ROOT, validation_fraction=1 / 12)
    val = data.load_dataset("mnist", "validation", data_dir=MNIST_ROOT,
                            validation_fraction=1 / 12, batch_size=1000)
    assert int(train.cardinality()) == math.ceil(55_000 / 128)
    val_images, val_labels = collect(val)
    assert len(val_labels) == 5_000
    # Validation examples come from the training files, never from the test split.
    train_keys = {x.tobytes() for x in _parse_idx_numpy(
        os.path.join(MNIST_ROOT, "train-images-idx3-ubyte.gz"))}
    assert all(x.tobytes() in train_keys
               for x in _unnormalise(val_images[:50])[..., 0].astype(np.uint8))
    # MNIST-rot: angles within [-45, 45] degrees, fixed by the seed.
    assert data.dataset_info("mnist").rotation_range_degrees == (-45.0, 45.0)
    rot_a, _ = collect(data.load_dataset("mnist", "validation", data_dir=MNIST_ROOT,
                                         validation_fraction=1 / 12, rotate=True, seed=4,
                                         batch_size=1000).take(1))
    rot_b, _ = collect(data.load_dataset("mnist", "validation", data_dir=MNIST_ROOT,
                                         validation_fraction=1 / 12, rotate=True, seed=4,
                                         batch_size=1000).take(1))
    np.testing.assert_array_equal(rot_a, rot_b)
    assert not np.allclose(rot_a, val_images[:1000])


def test_digits_refuse_a_data_dir(tmp_path):
    """The digits ship inside scikit-learn: a data_dir would be ignored, so it is refused."""
    with pytest.raises(ValueError, match="data_dir .* has no use with dataset 'digits'"):
        data.load_dataset("digits", "test", data_dir=str(tmp_path))
    assert len(list(data.load_dataset("digits", "test", batch_size=400))[0][1]) == 360
