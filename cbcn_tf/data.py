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

Example::

    ds = load_dataset("digits", "train", batch_size=64, training=True)
    images, labels = next(iter(ds))   # (64, 16, 16, 1) float32, (64,) int64
"""
import dataclasses
import functools
import math
import os

import numpy as np
import tensorflow as tf

__all__ = [
    "DATASETS", "DatasetInfo", "list_datasets", "dataset_info", "load_dataset", "rotate_images",
    "read_idx",
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


_CIFAR_MEAN, _CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
_MNIST_MEAN, _MNIST_STD = (0.1307,), (0.3081,)
_MNIST_ROT, _CIFAR_ROT = (-45.0, 45.0), (0.0, 360.0)

DATASETS = {
    # Train-split statistics of the 16x16 digits as built by `_digits_splits`.
    "digits": DatasetInfo("digits", 10, (16, 16, 1), None, ("train", "test"),
                          (0.3054,), (0.3189,), _MNIST_ROT),
    "mnist": DatasetInfo("mnist", 10, (28, 28, 1), "mnist", ("train", "test"),
                         _MNIST_MEAN, _MNIST_STD, _MNIST_ROT),
    "cifar10": DatasetInfo("cifar10", 10, (32, 32, 3), "cifar10", ("train", "test"),
                           _CIFAR_MEAN, _CIFAR_STD, _CIFAR_ROT),
    "cifar100": DatasetInfo("cifar100", 100, (32, 32, 3), "cifar100", ("train", "test"),
                            _CIFAR_MEAN, _CIFAR_STD, _CIFAR_ROT),
    "imagenet2012": DatasetInfo("imagenet2012", 1000, (224, 224, 3), "imagenet2012",
                                ("train", "validation"), (0.485, 0.456, 0.406),
                                (0.229, 0.224, 0.225), _CIFAR_ROT),
}

# The extensions tfds.folder_dataset.ImageFolder reads; other files are ignored.
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
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
    and RGB folders use the CIFAR-10 statistics (grayscale ones the MNIST statistics), as the
    folders this project uses hold CIFAR-10.

    Example::

        dataset_info("folder:../shared/datasets/cifar10").num_classes   # 10
    """
    root = _folder_root(name, data_dir)
    if root is not None:
        return _folder_info(root)
    if name not in DATASETS:
        raise ValueError(
            f"Unknown dataset {name!r}. Valid names: {', '.join(list_datasets())}, "
            "'folder:PATH', or 'image_folder' with data_dir=PATH."
        )
    return DATASETS[name]


def rotate_images(images, angles_radians) -> tf.Tensor:
    """Rotate images counter-clockwise about their centre, with bilinear interpolation.

    ``images`` is ``(N, H, W, C)`` or a single ``(H, W, C)`` image; ``angles_radians`` is a
    scalar or one angle per image. Pixels that come from outside the image are 0. The fill
    happens in whatever space the input is in: `load_dataset` rotates the [0, 1] pixels before
    normalising, so the corners are black, as in MNIST-rot (whose background is black).

    Example::

        rotate_images(tf.zeros([2, 32, 32, 3]), [math.pi / 2, 0.0])
    """
    images = tf.convert_to_tensor(images)
    single = images.shape.rank == 3
    if single:
        images = images[None]
    shape = tf.shape(images)
    height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    angles = tf.broadcast_to(tf.cast(angles_radians, tf.float32), shape[:1])
    cos, sin = tf.cos(angles), tf.sin(angles)
    # Maps each output pixel to its input location; the offsets keep the centre fixed.
    x_offset = ((width - 1) - (cos * (width - 1) - sin * (height - 1))) / 2
    y_offset = ((height - 1) - (sin * (width - 1) + cos * (height - 1))) / 2
    zeros = tf.zeros_like(angles)
    transforms = tf.stack([cos, -sin, x_offset, sin, cos, y_offset, zeros, zeros], axis=1)
    rotated = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=shape[1:3],
        fill_value=tf.constant(0.0), interpolation="BILINEAR", fill_mode="CONSTANT",
    )
    return rotated[0] if single else rotated


def load_dataset(
    name: str,
    split: str,
    *,
    batch_size: int = 128,
    training: bool = False,
    data_dir: str | None = None,
    rotate: bool = False,
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
      and ``"test"`` the remaining 360.
    * ``"mnist"`` with ``data_dir`` holding the four original IDX files
      (``train-images-idx3-ubyte.gz`` ...; e.g. ``../shared/datasets/mnist``): read offline
      with NumPy, each file's md5 checked against the published one.
    * ``"mnist"`` (other ``data_dir``), ``"cifar10"``, ``"cifar100"``: ``tfds.load`` with
      ``data_dir``, downloading as TFDS usually does when the data is not prepared yet.
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
    angles stay fixed per example, as in a pre-rotated dataset. With ``input_context`` the data
    is sharded per input pipeline before shuffling and ``batch_size`` is the global batch size.
    ``cache=True`` keeps the decoded source images in memory after the first epoch (CIFAR-10:
    about 150 MB), so later epochs skip JPEG decoding.

    ``epochs=(start, stop)`` (with ``training=True``) returns the epochs ``start .. stop - 1``
    back to back, each shuffled and augmented as a pure function of ``(seed, epoch)``: a
    training run resumed at epoch ``start`` in a new process sees exactly the batches an
    uninterrupted run sees (the default ``reshuffle_each_iteration`` order depends on how often
    the pipeline was iterated in this process). ``steps_per_epoch`` then takes that many
    batches per epoch (repeating the epoch's order if it has fewer).

    Example::

        train = load_dataset("folder:../shared/datasets/cifar10", "train", training=True,
                             validation_fraction=0.1)
        val = load_dataset("folder:../shared/datasets/cifar10", "validation",
                           validation_fraction=0.1, rotate=True)
    """
    info = dataset_info(name, data_dir=data_dir)
    if validation_fraction is not None and not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}.")
    carve = validation_fraction is not None and split in ("train", "validation")
    source_split = "train" if carve else split
    if source_split not in info.splits:
        hint = ""
        if split == "validation":
            hint = " Pass validation_fraction=0.1 to carve it out of 'train'."
        raise ValueError(
            f"Dataset {info.name!r} has no split {split!r}; it has {list(info.splits)}.{hint}"
        )

    ds = _load_source(info, source_split, data_dir).enumerate()
    if carve:
        ds = _carve_split(ds, split == "train", validation_fraction)
    if input_context is not None:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    if cache:
        ds = ds.cache()
    prepare = _make_prepare(info, training=training, rotate=rotate, seed=seed)
    if training and epochs is not None:
        source = ds

        def one_epoch(epoch):
            # Seeds are pure functions of (seed, epoch): no state carried between epochs.
            epoch_seed = (int(seed) * 1_000_003 + int(epoch)) % (2**63 - 1)
            shuffled = source.shuffle(shuffle_buffer, seed=epoch_seed,
                                      reshuffle_each_iteration=False)
            batches = shuffled.map(
                lambda index, example: prepare(
                    index, example, aug_seed=tf.stack([tf.constant(epoch_seed, tf.int64), index])),
                num_parallel_calls=tf.data.AUTOTUNE,
            ).batch(batch_size, drop_remainder=drop_remainder)
            if steps_per_epoch:
                batches = batches.repeat().take(steps_per_epoch)
            return batches

        # One small pipeline per epoch, concatenated as a balanced tree (shallow nesting).
        parts = [one_epoch(epoch) for epoch in range(*epochs)]
        if not parts:
            raise ValueError(f"epochs={tuple(epochs)} is an empty range of epochs.")
        while len(parts) > 1:
            parts = [a.concatenate(b) for a, b in zip(parts[::2], parts[1::2])] + (
                [parts[-1]] if len(parts) % 2 else [])
        return parts[0].prefetch(tf.data.AUTOTUNE)
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


# --- sources: (image uint8 or float32 in [0, 1], int64 label) in a fixed order ---------------


def _load_source(info, split, data_dir):
    if info.name == "digits":
        images, labels = _digits_splits()[split]
        return tf.data.Dataset.from_tensor_slices((images, labels))
    if info.name == "mnist" and data_dir is not None and _has_mnist_idx(data_dir):
        images, labels = _mnist_idx_split(os.path.abspath(os.path.expanduser(data_dir)), split)
        return tf.data.Dataset.from_tensor_slices((images, labels))
    import tensorflow_datasets as tfds  # imported here: it takes seconds to import

    if info.tfds_name is None:
        root = info.name[len("folder:"):]
        _validate_folder_split(root, split)
        builder = tfds.folder_dataset.ImageFolder(root, shape=info.input_shape)
        return builder.as_dataset(split=split, shuffle_files=False, as_supervised=True)
    kwargs = {}
    if info.tfds_name == "imagenet2012" and data_dir is not None:
        manual_dir = os.path.join(data_dir, "downloads", "manual")
        kwargs["download_and_prepare_kwargs"] = {
            "download_config": tfds.download.DownloadConfig(manual_dir=manual_dir)
        }
    return tfds.load(info.tfds_name, split=split, data_dir=data_dir, as_supervised=True,
                     shuffle_files=False, **kwargs)


# The original MNIST release (LeCun, Cortes, Burges): split -> (images file, labels file), and
# the md5 of each gzip file as published with it.
MNIST_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
MNIST_IDX_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}


def _has_mnist_idx(data_dir) -> bool:
    """Whether ``data_dir`` holds MNIST IDX files (else it is a TFDS data dir)."""
    folder = os.path.expanduser(data_dir)
    return any(os.path.exists(os.path.join(folder, name))
               for names in MNIST_IDX_FILES.values() for name in names)


def read_idx(path, *, md5: str | None = None) -> np.ndarray:
    """Read one IDX file (gzipped when the name ends in ``.gz``) into a NumPy array.

    IDX: two zero bytes, a type code (0x08 = uint8), the number of dimensions, one big-endian
    uint32 per dimension, then the data. ``md5`` (of the file as stored) is checked first.
    A missing, truncated or corrupt file raises ValueError naming it.

    Example::

        read_idx("../shared/datasets/mnist/t10k-labels-idx1-ubyte.gz").shape   # (10000,)
    """
    import gzip
    import hashlib

    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise ValueError(f"Cannot read MNIST file {path}: {exc.strerror}. Put the four original "
                         "IDX .gz files in data_dir.") from None
    if md5 is not None and hashlib.md5(raw).hexdigest() != md5:
        raise ValueError(f"MNIST file {path} is damaged (md5 {hashlib.md5(raw).hexdigest()}, "
                         f"expected {md5}); download it again.")
    try:
        data = gzip.decompress(raw) if path.endswith(".gz") else raw
    except (OSError, EOFError) as exc:
        raise ValueError(f"MNIST file {path} is not a valid gzip file ({exc}); download it "
                         "again.") from None
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes; expected the original "
                         "MNIST files.")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int(v) for v in np.frombuffer(data[4:header], ">u4"))
    if len(data) != header + int(np.prod(shape)):
        raise ValueError(f"{path} holds {len(data) - header} data bytes but its header announces "
                         f"shape {shape}; the file is truncated, download it again.")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


@functools.lru_cache(maxsize=4)
def _mnist_idx_split(folder, split):
    """(uint8 images (N, 28, 28, 1), int64 labels) of one split read from the IDX files."""
    image_file, label_file = MNIST_IDX_FILES[split]
    paths = [os.path.join(folder, name) for name in (image_file, label_file)]
    for path in paths:
        if not os.path.exists(path):
            names = ", ".join(n for pair in MNIST_IDX_FILES.values() for n in pair)
            raise ValueError(f"MNIST file {path} is missing; data_dir must hold the four "
                             f"original IDX files ({names}).")
    images, labels = (read_idx(path, md5=MNIST_IDX_MD5.get(os.path.basename(path)))
                      for path in paths)
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
        raise ValueError(f"{paths[0]} and {paths[1]} do not fit together (images "
                         f"{images.shape}, labels {labels.shape}).")
    return images[..., None], labels.astype(np.int64)


@functools.lru_cache(maxsize=1)
def _digits_splits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32)[..., None] / 16.0
    images = tf.image.resize(images, (16, 16), method="bilinear").numpy()
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(images))
    n_train = int(0.8 * len(images))
    train, test = order[:n_train], order[n_train:]
    return {"train": (images[train], labels[train]), "test": (images[test], labels[test])}


def _carve_split(ds, want_train, fraction):
    n = int(ds.cardinality())
    if n < 0:
        raise ValueError("validation_fraction needs a source split of known size.")
    n_train = n - round(n * fraction)
    if not 0 < n_train < n:
        raise ValueError(f"validation_fraction={fraction} leaves an empty split of {n} examples.")
    in_train = np.zeros(n, bool)
    in_train[np.random.default_rng(_SPLIT_SEED).permutation(n)[:n_train]] = True
    in_train = tf.constant(in_train)
    ds = ds.filter(lambda index, _: tf.equal(tf.gather(in_train, index), want_train))
    # filter() forgets the size; restoring it keeps Keras progress bars and steps exact.
    return ds.apply(tf.data.experimental.assert_cardinality(n_train if want_train else n - n_train))


# --- image folders ----------------------------------------------------------------------------


def _folder_root(name, data_dir):
    if name.startswith("folder:"):
        if data_dir is not None:
            raise ValueError(
                f"Give the folder once: {name!r} or 'image_folder' with data_dir, not both."
            )
        return os.path.abspath(os.path.expanduser(name[len("folder:"):]))
    if name == "image_folder":
        if data_dir is None:
            raise ValueError(
                "'image_folder' needs data_dir=PATH (layout PATH/<split>/<class>/<image>)."
            )
        return os.path.abspath(os.path.expanduser(data_dir))
    return None


def _subdirs(path):
    return sorted(e.name for e in os.scandir(path) if e.is_dir())


def _images_in(path):
    return sorted(
        os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(_IMAGE_EXTENSIONS)
    )


def _folder_info(root):
    if not os.path.isdir(root):
        raise ValueError(
            f"Image folder {root} does not exist; "
            f"expected the layout {root}/<split>/<class>/<image>."
        )
    splits = _subdirs(root)
    classes = sorted({c for s in splits for c in _subdirs(os.path.join(root, s))})
    if not classes:
        raise ValueError(
            f"No <split>/<class> folders in {root}; expected {root}/<split>/<class>/<image>."
        )
    width, height, mode = _check_image(_reference_image(root))
    channels = 1 if mode in ("1", "L", "LA", "I", "I;16", "F") else 3
    mean, std = (_MNIST_MEAN, _MNIST_STD) if channels == 1 else (_CIFAR_MEAN, _CIFAR_STD)
    return DatasetInfo(f"folder:{root}", len(classes), (height, width, channels), None,
                       tuple(splits), mean, std, _CIFAR_ROT)


def _reference_image(root):
    """The first image of "train" (else of the first split): every image must have its size."""
    for split in sorted(_subdirs(root), key=lambda s: s != "train"):
        for cls in _subdirs(os.path.join(root, split)):
            images = _images_in(os.path.join(root, split, cls))
            if images:
                return images[0]
    raise ValueError(f"No {'/'.join(_IMAGE_EXTENSIONS)} images under {root}.")


def _check_image(path):
    """Parse and verify the header (no pixel decoding); return (width, height, mode)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            size, mode = image.size, image.mode
            image.verify()
        if path.lower().endswith((".jpg", ".jpeg")):
            # A truncated JPEG passes the header checks but lacks its end-of-image marker.
            with open(path, "rb") as f:
                f.seek(max(0, os.path.getsize(path) - 32))
                if b"\xff\xd9" not in f.read():
                    raise OSError("no JPEG end-of-image marker (truncated file?)")
    except Exception as exc:  # PIL raises many types for bad files
        raise ValueError(f"Unreadable image {path}: {exc}. Delete or re-export it.") from exc
    return size[0], size[1], mode


def _validate_folder_split(root, split):
    split_dir = os.path.join(root, split)
    classes = _subdirs(split_dir)
    if not classes:
        raise ValueError(
            f"Split folder {split_dir} has no class folders; expected {split_dir}/<class>/<image>."
        )
    reference = _reference_image(root)
    reference_size = _check_image(reference)[:2]
    for cls in classes:
        images = _images_in(os.path.join(split_dir, cls))
        if not images:
            raise ValueError(
                f"Class folder {os.path.join(split_dir, cls)} has no {'/'.join(_IMAGE_EXTENSIONS)} "
                "images; add images or remove the folder."
            )
        for path in images:
            size = _check_image(path)[:2]
            if size != reference_size:
                raise ValueError(
                    f"Images differ in size: {reference} is {reference_size[0]}x"
                    f"{reference_size[1]} but {path} is {size[0]}x{size[1]}; "
                    "resize them to one size."
                )


# --- preprocessing ----------------------------------------------------------------------------


def _make_prepare(info, *, training, rotate, seed):
    """Per-example map ``(index, (image, label)) -> (normalised float image, label)``."""
    recipes = {"mnist": "mnist", "digits": "mnist", "imagenet2012": "imagenet"}
    recipe = recipes.get(info.name, "cifar")  # cifar10, cifar100 and image folders
    mean = tf.constant(info.mean, tf.float32)
    std = tf.constant(info.std, tf.float32)
    low, high = info.rotation_range_degrees
    height = info.input_shape[0]
    pad = 2 if recipe == "mnist" else max(1, round(height / 8))  # 4 pixels at CIFAR's 32x32

    def prepare(index, example, aug_seed=None):
        image, label = example
        image = tf.image.convert_image_dtype(image, tf.float32)  # uint8 -> [0, 1]
        if rotate:
            degrees = tf.random.stateless_uniform(
                [], seed=tf.stack([tf.constant(seed, tf.int64), index]), minval=low, maxval=high
            )
            image = rotate_images(image, degrees * (math.pi / 180))
        if recipe == "imagenet" and training:
            image = _imagenet_train(image, aug_seed, height)
        elif recipe == "imagenet":
            image = _imagenet_eval(image, height)
        elif training:
            crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(aug_seed, 2))
            padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
            image = tf.image.stateless_random_crop(padded, tf.shape(image), seed=crop_seed)
            if recipe == "cifar":
                image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
        return (image - mean) / std, label

    return prepare


def _imagenet_train(image, aug_seed, size):
    box_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(aug_seed, 2))
    begin, box_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=box_seed,
        min_object_covered=0.0, aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0),
        max_attempts=10, use_image_if_no_bounding_boxes=True,
    )
    image = tf.image.resize(tf.slice(image, begin, box_size), (size, size))
    return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)


def _imagenet_eval(image, size):
    """Resize the shorter side to 256 (for size 224), then take the centre size x size crop."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    new_shape = tf.cast(tf.round(shape * (size * 256 / 224) / tf.reduce_min(shape)), tf.int32)
    image = tf.image.resize(image, new_shape)
    top, left = (new_shape[0] - size) // 2, (new_shape[1] - size) // 2
    return tf.image.crop_to_bounding_box(image, top, left, size, size)
