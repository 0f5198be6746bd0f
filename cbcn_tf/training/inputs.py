"""Input pipelines of a training run: per-worker shards, resumable epochs, step counts."""
from __future__ import annotations

import math

import tensorflow as tf

from cbcn_tf import config as config_lib
from cbcn_tf import data as data_lib
from cbcn_tf.errors import ConfigError
from cbcn_tf.training.evaluation import EVAL_SEED


def make_input_fn(config: config_lib.TrainConfig, *, training: bool, epochs=None,
                  steps_per_epoch=None, drop_remainder=False, verbose=False):
    """``fn(input_context) -> tf.data.Dataset`` for ``strategy.distribute_datasets_from_function``.

    The dataset is this input pipeline's shard (``input_pipeline_id`` of
    ``num_input_pipelines``, taken before shuffling) in per-replica batches of the global
    ``config.batch_size``. ``training=True`` reads ``config.train_split`` for ``epochs``
    (start, stop), each epoch shuffled and augmented as a function of (seed, epoch);
    ``training=False`` reads ``config.eval_split`` (rotated under ``rotate_train``, fixed seed).
    """
    common = dict(data_dir=config.data_dir, validation_fraction=config.validation_fraction,
                  batch_size=config.batch_size, drop_remainder=drop_remainder,
                  cache=config.cache)

    def input_fn(context):
        if verbose:
            print(f"Input pipeline {context.input_pipeline_id} of "
                  f"{context.num_input_pipelines}: batches of "
                  f"{context.get_per_replica_batch_size(config.batch_size)} per replica")
        if training:
            return data_lib.load_dataset(
                config.dataset, config.train_split, training=True, rotate=config.rotate_train,
                seed=config.seed, input_context=context, epochs=epochs,
                steps_per_epoch=steps_per_epoch, **common)
        # Validate each epoch on the protocol's test set: rotated when training on rotated
        # images.
        return data_lib.load_dataset(config.dataset, config.eval_split, rotate=config.rotate_train,
                                     seed=EVAL_SEED, input_context=context, **common)

    return input_fn


def training_data(config, strategy, start_epoch: int, verbose: int = 0):
    """Per-worker input pipelines and the steps per epoch every worker runs.

    Training data is the epochs ``start_epoch ..`` of `data_lib.load_dataset(epochs=...)`,
    streamed (each epoch's pipeline is made when the one before it ends, so any epoch count
    starts at once): each epoch's order and augmentation are a pure function of (seed, epoch),
    so a resumed run gets the batches an uninterrupted one gets. Each input pipeline (one per
    worker) reads shard ``input_pipeline_id`` of ``num_input_pipelines``, sharded before
    shuffling.
    """
    total_epochs = config.epochs + config.center_loss_epochs
    first = min(start_epoch, total_epochs - 1)  # a finished run still needs a valid pipeline
    common = dict(data_dir=config.data_dir, validation_fraction=config.validation_fraction)
    # Only multi_worker uses distribute_datasets_from_function; the default strategy and
    # MirroredStrategy (one worker: Keras splits each global batch across local replicas,
    # including the last partial one) get plain datasets.
    distributed = config.distribute == "multi_worker"
    workers = getattr(strategy.extended, "_num_workers", 1) if distributed else 1
    multi = workers > 1
    steps = {"train": config.steps_per_epoch, "eval": None}
    if distributed:
        # Distributed datasets need explicit step counts, and every worker must run the same
        # number of steps: the smallest shard decides (its last partial batch is dropped).
        per_worker = config.batch_size // workers
        for key, split in (("train", config.train_split), ("eval", config.eval_split)):
            size = int(data_lib.load_dataset(config.dataset, split, batch_size=1,
                                             **common).cardinality())
            count = size // workers // per_worker if multi else math.ceil(size / per_worker)
            if not count:
                raise ConfigError(
                    f"batch_size {config.batch_size} is larger than a worker's shard of the "
                    f"{split!r} split ({size // workers} examples); lower batch_size.")
            if steps[key] is None:
                steps[key] = count

    train_fn = make_input_fn(config, training=True, epochs=(first, total_epochs),
                             steps_per_epoch=steps["train"], drop_remainder=multi,
                             verbose=verbose and multi)
    eval_fn = make_input_fn(config, training=False, drop_remainder=multi)
    if not distributed:
        train_data = train_fn(tf.distribute.InputContext())
        eval_data = eval_fn(tf.distribute.InputContext())
        if steps["train"] is None:  # one pass over the split per epoch (a known size)
            steps["train"] = int(train_data.cardinality()) // (total_epochs - first)
        return train_data, eval_data, steps
    train_data = strategy.distribute_datasets_from_function(train_fn)
    eval_data = strategy.distribute_datasets_from_function(eval_fn)
    return train_data, eval_data, steps
