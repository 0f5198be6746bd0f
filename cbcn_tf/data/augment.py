"""Per-example preprocessing: rotation (the rotated benchmarks) and the training augmentation
recipes named by `DatasetInfo.augmentation` (see `cbcn_tf.data`)."""
import math

import tensorflow as tf


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


def make_prepare(info, *, training, rotate, seed, angle=None):
    """Per-example map ``(index, (image, label)) -> (normalised float image, label)``.

    ``rotate=True`` turns each example by its own seeded angle in the dataset's rotation
    range; ``angle`` (degrees, counter-clockwise) turns every example by that one angle."""
    if rotate and angle is not None:
        from cbcn_tf.errors import DataError

        raise DataError("Pass rotate=True (seeded angle per example) or angle=DEGREES (one "
                         "angle for every example), not both.")
    recipe = info.augmentation
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
        elif angle is not None:
            image = rotate_images(image, float(angle) * (math.pi / 180))
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
