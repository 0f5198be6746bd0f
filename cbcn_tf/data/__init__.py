"""Input pipelines for the CBCN experiments (CIFAR, MNIST, ImageNet, scikit-learn digits, folders).

Every pipeline yields ``(image, label)`` batches: float32 NHWC images normalised with the
dataset's mean/std, and int64 labels. Augmentation follows the CBCN paper recipes:

* CIFAR-style (``cifar10``, ``cifar100``, image folders): training takes a random crop after
  reflect padding (4 pixels at 32x32) and a random horizontal flip.
* MNIST-style (``mnist``, ``digits``): training takes a random crop after 2 pixels of reflect
  padding (a small translation); no flip, since mirrored digits are different symbols.
* ImageNet: training takes a random-resized crop to 224 and a flip; evaluation resizes the
  shorter side to 256 and takes the centre 224x224 crop.

``rotate=True`` gives the rotated benchmarks (MNIST-rot: angles uniform in [-45, 45] degrees;
CIFAR10-rot: uniform in [0, 360)). Each example's angle is a stateless function of
``(seed, index of the example in its source split)``, so it does not depend on shuffling,
sharding or batching, and two calls give identical images.

The modules beside this one: `cbcn_tf.data.mnist_idx` reads the original MNIST IDX files,
`cbcn_tf.data.image_folders` finds and checks ``PATH/<split>/<class>/<image>`` folders, and
`cbcn_tf.data.augment` holds the rotation and the training augmentation. The TFDS builders
(CIFAR, ImageNet, MNIST without IDX files) are prepared here, in `load_dataset`'s sources.

Example::

    ds = load_dataset("digits", "train", batch_size=64, training=True)
    images, labels = next(iter(ds))   # (64, 16, 16, 1) float32, (64,) int64
"""
import dataclasses
import functools
import os
from typing import Literal

import numpy as np
import tensorflow as tf

from cbcn_tf.data import image_folders, mnist_idx
from cbcn_tf.data.augment import make_prepare, rotate_images
from cbcn_tf.data.mnist_idx import read_idx
from cbcn_tf.epochs import stream_epochs
from cbcn_tf.errors import DataError

# Training augmentation recipes (see the module docstring): "cifar" (reflect-pad crop + flip),
# "mnist" (reflect-pad crop, no flip), "imagenet" (random-resized crop + flip; centre crop).
Augmentation = Literal["cifar", "mnist", "imagenet"]

__all__ = [
    "DATASETS", "DatasetInfo", "list_datasets", "dataset_info", "load_dataset", "load_turned",
    "rotate_images", "read_idx",
]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static description of a dataset; ``mean``/``std`` apply to pixels scaled to [0, 1].

    Example::

        dataset_info("cifar10").input_shape   # (32, 32, 3)
    """

    name: str
    num_classes: int
    input_shape: tuple
    tfds_name: str | None
    splits: tuple
    mean: tuple
    std: tuple
    rotation_range_degrees: tuple
    augmentation: Augmentation = "cifar"
    # An image folder's absolute path (its name is then "folder:" + root); None otherwise.
    root: str | None = None


_CIFAR_MEAN, _CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
_MNIST_MEAN, _MNIST_STD = (0.1307,), (0.3081,)
_MNIST_ROT, _CIFAR_ROT = (-45.0, 45.0), (0.0, 360.0)

DATASETS = {
    # Train-split statistics of the 16x16 digits as built by `_digits_splits`.
    "digits": DatasetInfo("digits", 10, (16, 16, 1), None, ("train", "test"),
                          (0.3054,), (0.3189,), _MNIST_ROT, "mnist"),
    "mnist": DatasetInfo("mnist", 10, (28, 28, 1), "mnist", ("train", "test"),
                         _MNIST_MEAN, _MNIST_STD, _MNIST_ROT, "mnist"),
    "cifar10": DatasetInfo("cifar10", 10, (32, 32, 3), "cifar10", ("train", "test"),
                           _CIFAR_MEAN, _CIFAR_STD, _CIFAR_ROT),
    "cifar100": DatasetInfo("cifar100", 100, (32, 32, 3), "cifar100", ("train", "test"),
                            _CIFAR_MEAN, _CIFAR_STD, _CIFAR_ROT),
    "imagenet2012": DatasetInfo("imagenet2012", 1000, (224, 224, 3), "imagenet2012",
                                ("train", "validation"), (0.485, 0.456, 0.406),
                                (0.229, 0.224, 0.225), _CIFAR_ROT, "imagenet"),
}

# Fixed seed of the validation_fraction permutation; see `load_dataset`.
_SPLIT_SEED = 0


def list_datasets() -> list:
    """Names of the built-in datasets. Image folders are passed as ``"folder:PATH"``.

    Example::

        list_datasets()   # ['cifar10', 'cifar100', 'digits', 'imagenet2012', 'mnist']
    """
    return sorted(DATASETS)


def dataset_info(name: str, *, data_dir=None) -> DatasetInfo:
    """Return the `DatasetInfo` for ``name`` without loading or downloading any data.

    ``name`` is a key of `DATASETS`, ``"folder:PATH"``, or ``"image_folder"`` with
    ``data_dir=PATH``. For a folder ``PATH/<split>/<class>/<image>`` the classes are the class
    folder names (sorted, across all splits), the input shape is read from the first image,
    RGB folders use the CIFAR-10 statistics (grayscale ones the MNIST statistics), and
    training uses the CIFAR augmentation.

    Example::

        dataset_info("folder:PATH/cifar10").num_classes   # 10 for a CIFAR-10 ImageFolder at PATH
    """
    root = image_folders.folder_root(name, data_dir)
    if root is not None:
        return _folder_info(root)
    if name not in DATASETS:
        raise DataError(
            f"Unknown dataset {name!r}. Valid names: {', '.join(list_datasets())}, "
            "'folder:PATH', or 'image_folder' with data_dir=PATH."
        )
    return DATASETS[name]


def load_dataset(
    name: str,
    split: str,
    *,
    batch_size: int = 128,
    training: bool = False,
    data_dir: str | None = None,
    rotate: bool = False,
    angle: float | None = None,
    seed: int = 0,
    shuffle_buffer: int = 10_000,
    validation_fraction: float | None = None,
    input_context: tf.distribute.InputContext | None = None,
    drop_remainder: bool = False,
    cache: bool = False,
    epochs: tuple | None = None,
    steps_per_epoch: int | None = None,
) -> tf.data.Dataset:
    """Build a batched, prefetched ``(image, label)`` pipeline for one split.

    Datasets:

    * ``"digits"``: scikit-learn's 1,797 real 8x8 handwritten digits. They ship inside
      scikit-learn, so this works offline and fast (tests, smoke runs). Pixels 0..16 are scaled
      to [0, 1] and bilinearly resized to 16x16x1, so a ResNet with three stride-2 stages still
      ends on a 2x2 map. ``"train"`` is the first 80% (1,437) of a fixed permutation (seed 0)
      and ``"test"`` the remaining 360. There is no folder to read, so a ``data_dir`` is
      refused (`DataError`).
    * ``"mnist"`` with ``data_dir`` holding the original IDX files, gzipped as published
      (``train-images-idx3-ubyte.gz`` ...) or gunzipped (``train-images-idx3-ubyte``): read
      offline with NumPy, each file's md5 checked against the published one of its form. Only
      the two files of the split read must be there (``t10k-*`` for ``"test"``). A
      ``data_dir`` holding any IDX-like file is read this way, so a missing file is an error
      naming it, never a TFDS download.
    * ``"mnist"`` (other ``data_dir``), ``"cifar10"``, ``"cifar100"``: the TFDS builder in
      ``data_dir`` (TFDS's default folder when None), prepared on first use from the original
      files in ``<data_dir>/downloads/manual`` if they are there (e.g. MNIST's four
      ``*-ubyte.gz``), else downloaded as TFDS usually does. Data neither prepared nor
      downloadable raises `DataError` naming the folder TFDS looked in and how to prepare it.
    * ``"imagenet2012"``: TFDS cannot download ImageNet. Put ``ILSVRC2012_img_train.tar`` and
      ``ILSVRC2012_img_val.tar`` in ``<data_dir>/downloads/manual`` (TFDS default data dir when
      ``data_dir`` is None); the first call prepares the dataset from them.
    * ``"folder:PATH"`` (or ``"image_folder"`` with ``data_dir=PATH``): images in
      ``PATH/<split>/<class>/<image>`` read with ``tfds.folder_dataset.ImageFolder``. Before
      building the pipeline every image of the split is checked: its header is parsed and
      verified with PIL and JPEGs must end with their end-of-image marker (this catches
      truncated files without decoding pixels: 50,000 CIFAR JPEGs take a few seconds). A
      missing folder or split, an empty class folder, an unreadable image or images of
      different sizes raise ``ValueError`` naming the path.

    ``validation_fraction`` carves ``"train"`` (the first ``1 - validation_fraction`` of a
    fixed permutation) and ``"validation"`` (the rest) out of the source ``"train"`` split, for
    any dataset; other splits load unchanged. The permutation depends only on the split size,
    never on ``seed``, so runs with different seeds cannot train on each other's validation
    examples.

    ``training=True`` shuffles (seeded, reshuffled every epoch) and augments; augmentation draws
    stateless per-example seeds from ``tf.data.Dataset.random(seed)``, so a run is reproducible.
    ``rotate=True`` may be combined with ``training=True`` (the rotated-train protocol); the
    angles stay fixed per example, as in a pre-rotated dataset. ``angle=DEGREES`` instead turns
    every example by that one angle (counter-clockwise about the centre, corners black as with
    ``rotate``): the points of an accuracy-against-angle curve. With ``input_context`` the data
    is sharded per input pipeline before shuffling and ``batch_size`` is the global batch size.
    ``cache=True`` keeps the decoded source images in memory after the first epoch (CIFAR-10:
    about 150 MB), so later epochs skip JPEG decoding.

    ``epochs=(start, stop)`` (with ``training=True``) returns the epochs ``start .. stop - 1``
    back to back, streamed (each epoch's pipeline is made when the one before it ends, so any
    number of epochs starts at once), each shuffled and augmented as a pure function of
    ``(seed, epoch)`` (and TF's global seed, as every tf.data shuffle; `train` sets it): a
    training run resumed at epoch ``start`` in a new process sees exactly the batches an
    uninterrupted run sees (the default ``reshuffle_each_iteration`` order depends on how often
    the pipeline was iterated in this process). ``steps_per_epoch`` then takes that many
    batches per epoch (repeating the epoch's order if it has fewer).

    Example::

        train = load_dataset("folder:PATH/cifar10", "train", training=True,
                             validation_fraction=0.1)
        val = load_dataset("folder:PATH/cifar10", "validation",
                           validation_fraction=0.1, rotate=True)
    """
    info = dataset_info(name, data_dir=data_dir)
    ds = _indexed_split(info, split, data_dir, validation_fraction)
    if input_context is not None:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    if cache:
        ds = ds.cache()
    prepare = make_prepare(info, training=training, rotate=rotate, seed=seed, angle=angle)
    if training and epochs is not None:
        return stream_epochs(ds, prepare, epochs, seed=seed, shuffle_buffer=shuffle_buffer,
                             batch_size=batch_size, drop_remainder=drop_remainder,
                             steps_per_epoch=steps_per_epoch)
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        randoms = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, randoms)).map(
            lambda item, rand: prepare(*item, aug_seed=tf.stack([rand, item[0]])),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    else:
        ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def load_turned(name: str, split: str, angles, *, batch_size: int = 128,
                data_dir: str | None = None, seed: int = 0,
                validation_fraction: float | None = None) -> dict:
    """``{angle: load_dataset(name, split, angle=angle, ...)}`` for each of ``angles``, reading
    and decoding the split once: its source images are kept in memory (uint8 as stored: MNIST
    test 7.8 MB, the CIFAR-10 validation split 15 MB), and each angle's pipeline turns and
    normalises them as `load_dataset` does (same images, same order).

    Example::

        turned = load_turned("digits", "test", [0, 90])
        images, labels = next(iter(turned[90]))   # every image a quarter turn counter-clockwise
    """
    info = dataset_info(name, data_dir=data_dir)
    parts = list(_indexed_split(info, split, data_dir, validation_fraction).batch(4096))
    indices, images, labels = (np.concatenate([np.asarray(p[0]) for p in parts]),
                               np.concatenate([np.asarray(p[1][0]) for p in parts]),
                               np.concatenate([np.asarray(p[1][1]) for p in parts]))
    source = tf.data.Dataset.from_tensor_slices((indices, (images, labels)))
    return {angle: source.map(make_prepare(info, training=False, rotate=False, seed=seed,
                                           angle=angle), num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch_size).prefetch(tf.data.AUTOTUNE)
            for angle in angles}


def _indexed_split(info, split, data_dir, validation_fraction):
    """``(index in the source split, (image, label))`` of ``split``, unbatched, unprepared."""
    if validation_fraction is not None and not 0 < validation_fraction < 1:
        raise DataError(f"validation_fraction must be in (0, 1), got {validation_fraction}.")
    carve = validation_fraction is not None and split in ("train", "validation")
    source_split = "train" if carve else split
    if source_split not in info.splits:
        hint = ""
        if split == "validation":
            hint = " Pass validation_fraction=0.1 to carve it out of 'train'."
        raise DataError(
            f"Dataset {info.name!r} has no split {split!r}; it has {list(info.splits)}.{hint}"
        )
    ds = _load_source(info, source_split, data_dir).enumerate()
    if carve:
        ds = _carve_split(ds, split == "train", validation_fraction)
    return ds


# --- sources: (image uint8 or float32 in [0, 1], int64 label) in a fixed order ---------------


def _load_source(info, split, data_dir):
    if info.name == "digits":
        if data_dir is not None:
            raise DataError(f"data_dir {data_dir} has no use with dataset 'digits', which ships "
                            "inside scikit-learn; remove data_dir (--set data_dir= or drop "
                            "--data-dir).")
        images, labels = _digits_splits()[split]
        return tf.data.Dataset.from_tensor_slices((images, labels))
    if info.name == "mnist" and data_dir is not None and mnist_idx.has_idx_files(data_dir):
        images, labels = mnist_idx.load_split(os.path.abspath(os.path.expanduser(data_dir)), split)
        return tf.data.Dataset.from_tensor_slices((images, labels))
    import tensorflow_datasets as tfds  # imported here: it takes seconds to import

    if info.root is not None:
        image_folders.validate_split(info.root, split)
        builder = tfds.folder_dataset.ImageFolder(info.root, shape=info.input_shape)
        return builder.as_dataset(split=split, shuffle_files=False, as_supervised=True)
    builder = _prepared_tfds_builder(tfds, info.tfds_name, data_dir)
    return builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)


def _prepared_tfds_builder(tfds, name, data_dir):
    """The TFDS builder of ``name``, prepared (downloading only if TFDS must).

    Files in ``<data_dir>/downloads/manual`` named as TFDS downloads them (e.g. MNIST's
    ``train-images-idx3-ubyte.gz``, ImageNet's ``ILSVRC2012_img_train.tar``) are used instead
    of downloading when their checksums match. Data neither prepared nor downloadable is one
    `DataError` naming the folder TFDS looked in and how to prepare it.
    """
    builder = tfds.builder(name, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    manual_dir = os.path.join(builder.data_dir_root, "downloads", "manual")
    config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    tfds.disable_progress_bar()  # its bars would bury a failure's one-line message
    try:
        builder.download_and_prepare(download_config=config)
    except Exception as exc:  # noqa: BLE001  (network, checksum, manual-file errors of TFDS)
        reason = " ".join(str(exc).split())[:300]
        raise DataError(
            f"TFDS has no prepared {name!r} in {builder.data_dir} and could not download or "
            f"prepare it ({type(exc).__name__}: {reason}). Put the original files in "
            f"{manual_dir} (or run `tfds build {name} --data_dir "
            f"{builder.data_dir_root}` where there is network, then copy that folder), or use "
            "a local copy: --set dataset=image_folder --set data_dir=PATH.") from exc
    finally:
        tfds.enable_progress_bar()
    return builder


# scikit-learn's digit scans are 8x8; the "digits" dataset serves them at 16x16.
DIGITS_SCAN_SIZE = (8, 8)


def digits_from_scans(scans) -> np.ndarray:
    """8x8 digit scans, float (N, 8, 8, 1) in [0, 1], as the "digits" dataset's 16x16 images
    (bilinear resize; `cbcn_tf.predict` applies it to 8x8 image files too)."""
    return tf.image.resize(scans, DATASETS["digits"].input_shape[:2], method="bilinear").numpy()


@functools.lru_cache(maxsize=1)
def _digits_splits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits_from_scans(digits.images.astype(np.float32)[..., None] / 16.0)
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(images))
    n_train = int(0.8 * len(images))
    train, test = order[:n_train], order[n_train:]
    return {"train": (images[train], labels[train]), "test": (images[test], labels[test])}


def _carve_split(ds, want_train, fraction):
    n = int(ds.cardinality())
    if n < 0:
        raise DataError("validation_fraction needs a source split of known size.")
    n_train = n - round(n * fraction)
    if not 0 < n_train < n:
        raise DataError(f"validation_fraction={fraction} leaves an empty split of {n} examples.")
    in_train = np.zeros(n, bool)
    in_train[np.random.default_rng(_SPLIT_SEED).permutation(n)[:n_train]] = True
    in_train = tf.constant(in_train)
    ds = ds.filter(lambda index, _: tf.equal(tf.gather(in_train, index), want_train))
    # filter() forgets the size; restoring it keeps Keras progress bars and steps exact.
    return ds.apply(tf.data.experimental.assert_cardinality(n_train if want_train else n - n_train))


# --- image folders ----------------------------------------------------------------------------


def _folder_info(root):
    splits, classes, shape = image_folders.layout(root)
    mean, std = (_MNIST_MEAN, _MNIST_STD) if shape[2] == 1 else (_CIFAR_MEAN, _CIFAR_STD)
    return DatasetInfo(f"folder:{root}", len(classes), shape, None, tuple(splits), mean, std,
                       _CIFAR_ROT, root=root)
