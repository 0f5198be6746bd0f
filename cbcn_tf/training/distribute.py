"""Distribution strategies for the config key ``distribute`` (docs/DISTRIBUTED.md)."""
from __future__ import annotations

import os
import typing
import warnings

import tensorflow as tf

from cbcn_tf import config as config_lib
from cbcn_tf.errors import ConfigError

STRATEGIES = typing.get_args(config_lib.Distribute)
_FACTORIES = {"none": tf.distribute.get_strategy, "mirrored": tf.distribute.MirroredStrategy,
              "multi_worker": tf.distribute.MultiWorkerMirroredStrategy}


class SingleWorkerWarning(UserWarning):
    """``multi_worker`` without ``TF_CONFIG``: the run trains as one worker on this machine."""


SINGLE_WORKER_WARNING = (
    "--distribute multi_worker without the TF_CONFIG environment variable trains as one "
    "worker on this machine; to train on a cluster, set TF_CONFIG on every host "
    "(docs/DISTRIBUTED.md), or use --distribute none / mirrored on one machine.")


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The distribution strategy for ``--distribute NAME``.

    "none": the default strategy; "mirrored": ``MirroredStrategy`` over all local devices;
    "multi_worker": ``MultiWorkerMirroredStrategy`` with the cluster and this process' task
    from the ``TF_CONFIG`` environment variable (see docs/DISTRIBUTED.md). TensorFlow needs
    the multi-worker strategy created before any other TF op runs in the process, which is why
    `train` creates it first. Without ``TF_CONFIG`` it is one local worker and a
    `SingleWorkerWarning` says so.

    Example:
        >>> make_strategy("none").num_replicas_in_sync
        1
    """
    if name == "multi_worker" and not os.environ.get("TF_CONFIG"):
        warnings.warn(SINGLE_WORKER_WARNING, SingleWorkerWarning, stacklevel=2)
    if name in _FACTORIES:
        return _FACTORIES[name]()
    raise ConfigError(
        f"Unknown distribution strategy {name!r}; use one of {', '.join(STRATEGIES)}.")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run (checkpoints, history, summaries, model.h5).

    True without distribution and for MirroredStrategy; under MultiWorkerMirroredStrategy
    only for the "chief" task (or worker 0 when TF_CONFIG has no chief).
    """
    return bool(strategy.extended.should_checkpoint)


def task(strategy) -> tuple:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return None, 0
    return resolver.task_type, resolver.task_id or 0
