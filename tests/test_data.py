"""Tests for cbcn_tf.data: offline only (scikit-learn digits, TFDS mock data, tmp folders)."""
import collections
import math
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import cbcn_tf.data as data

CIFAR_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
                          "datasets", "cifar10")  # shared/ sits beside the repository


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
    take = lambda rotate: collect(data.load_dataset("digits", "test", rotate=rotate))[0][:32]
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


@pytest.mark.skipif(not os.path.isdir(CIFAR_ROOT), reason="real CIFAR-10 folder not present")
def test_real_cifar10_folder():
    name = f"folder:{CIFAR_ROOT}"
    assert data.dataset_info(name).num_classes == 10
    ds = data.load_dataset(name, "validation", batch_size=16, validation_fraction=0.1)
    assert ds.cardinality() == math.ceil(5000 / 16)
    images, labels = next(iter(ds))
    assert images.shape == (16, 32, 32, 3)
    assert np.all((labels.numpy() >= 0) & (labels.numpy() < 10))
