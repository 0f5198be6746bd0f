"""Training epochs as one streamed tf.data pipeline, each epoch a pure function of
(seed, epoch): `stream_epochs`, used by `cbcn_tf.data.load_dataset(epochs=...)`."""
import tensorflow as tf

from cbcn_tf.errors import DataError

# Per-epoch training seeds are (seed * 1_000_003 + epoch) modulo this (the int64 maximum).
_EPOCH_SEED_MODULUS = 2**63 - 1
_SHUFFLE_SEED_LIMIT = 2**31 - 1  # tf.data takes each shuffle seed modulo this


def stream_epochs(source, prepare, epochs, *, seed, shuffle_buffer, batch_size,
                  drop_remainder=False, steps_per_epoch=None) -> tf.data.Dataset:
    """The epochs ``start .. stop - 1`` (``epochs=(start, stop)``) of ``source`` back to back.

    ``source`` yields ``(index, example)``; ``prepare(index, example, aug_seed=...)`` augments
    one example. Epoch ``e`` is ``source`` shuffled with an ``shuffle_buffer`` buffer, prepared
    and batched, with shuffle and augmentation seeds made of ``(seed, e)`` only (and TF's global
    seed, as every tf.data shuffle), so a run resumed at epoch ``start`` in a new process sees
    the batches an uninterrupted run sees. ``steps_per_epoch`` takes that many batches per
    epoch (repeating the epoch's order if it has fewer).

    Streamed: an epoch's pipeline is made when the one before it ends, so any number of
    epochs starts at once. The size (known per epoch) is kept for Keras' step counts.
    """
    start, stop = (int(epoch) for epoch in epochs)
    if start >= stop:
        raise DataError(f"epochs={tuple(epochs)} is an empty range of epochs.")
    base = int(seed) * 1_000_003 % _EPOCH_SEED_MODULUS
    # The shuffle's graph-level seed is TF's global seed, as for `Dataset.shuffle` (`train`
    # sets it to the run's seed before building the pipeline).
    graph_seed = tf.compat.v1.random.get_seed(1)[0]

    def one_epoch(epoch):
        epoch_seed = _epoch_seed(base, epoch)
        shuffled = _shuffle_once(source, shuffle_buffer, graph_seed, epoch_seed)
        batches = shuffled.map(
            lambda index, example: prepare(index, example,
                                           aug_seed=tf.stack([epoch_seed, index])),
            num_parallel_calls=tf.data.AUTOTUNE,
        ).batch(batch_size, drop_remainder=drop_remainder)
        if steps_per_epoch:
            batches = batches.repeat().take(steps_per_epoch)
        return batches

    per_epoch = int(one_epoch(tf.constant(start, tf.int64)).cardinality())
    streamed = tf.data.Dataset.range(start, stop).flat_map(one_epoch)
    if per_epoch >= 0:
        streamed = streamed.apply(
            tf.data.experimental.assert_cardinality(per_epoch * (stop - start)))
    return streamed.prefetch(tf.data.AUTOTUNE)


def _epoch_seed(base, epoch):
    """``(base + epoch) % _EPOCH_SEED_MODULUS`` as an int64 tensor, for ``0 <= base`` below
    the modulus and an int64 ``epoch >= 0``, without overflowing."""
    room = _EPOCH_SEED_MODULUS - base
    epoch = tf.cast(epoch, tf.int64)
    return tf.where(epoch >= room, epoch - room, base + epoch)


def _shuffle_once(ds, buffer_size, graph_seed: int, op_seed):
    """``ds.shuffle(buffer_size, seed=op_seed, reshuffle_each_iteration=False)`` under the
    graph-level seed ``graph_seed``, for an int64 tensor ``op_seed``.

    `Dataset.shuffle` itself refuses a tensor seed inside a ``flat_map`` function when TF's
    global seed is 0 (its seed check takes the tensor as a Python bool), so this builds the same
    dataset op with the same two seeds (`tf.compat.v1.random.get_seed`'s: each modulo
    2**31 - 1, never both 0)."""
    limit = _SHUFFLE_SEED_LIMIT
    seed2 = tf.math.floormod(op_seed, limit)
    if graph_seed % limit == 0:
        seed2 = tf.where(tf.equal(seed2, 0), tf.constant(limit, tf.int64), seed2)
    specs = tf.nest.flatten(ds.element_spec)
    variant = tf.raw_ops.ShuffleDatasetV3(
        input_dataset=tf.data.experimental.to_variant(ds),
        buffer_size=tf.constant(buffer_size, tf.int64),
        seed=tf.constant(graph_seed % limit, tf.int64), seed2=seed2,
        seed_generator=tf.raw_ops.DummySeedGenerator(), reshuffle_each_iteration=False,
        output_types=[spec.dtype for spec in specs], output_shapes=[spec.shape for spec in specs])
    return tf.data.experimental.from_variant(variant, ds.element_spec)
