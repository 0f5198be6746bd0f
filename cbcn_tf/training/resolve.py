"""`resolve_config`: the one step from a config (recipe + overrides) to the settings of a run.

`train` resolves its config once, before anything is built or written; the model, optimiser,
input pipelines and strategy then use the resolved config as it is. A `TrainConfig` already
holds every value as its field's type and choice (checked when it is made); resolving checks
the rest and fills in what the dataset decides.
"""
from __future__ import annotations

import dataclasses
import os

from cbcn_tf import config as config_lib
from cbcn_tf import data as data_lib
from cbcn_tf.errors import ConfigError


def resolve_config(config: config_lib.TrainConfig, *,
                   replicas: int = 1) -> config_lib.TrainConfig:
    """``config`` checked as a whole, with the dataset's model_kwargs and absolute paths.

    Checked, in this order (a ConfigError or DataError naming the key and the fix): the
    values (`config.check_values`), the dataset (its info is read once here: an unknown name
    or an unreadable image folder fails), the model (`check_model_settings`), a given
    ``model_kwargs.input_shape`` against the dataset's images, and ``batch_size`` against the
    ``replicas`` it is split across.

    Filled in: ``model_kwargs`` input_shape and num_classes from the dataset unless given;
    ``data_dir`` and an image-folder dataset as absolute paths (what config.yaml stores, so the
    run can be evaluated or resumed from any working directory). A resolved config resolves
    to itself, which is how a restarted run recognises its saved config.yaml.

    Example:
        >>> cfg = resolve_config(config_lib.load_config("digits_demo"))
        >>> cfg.model_kwargs["input_shape"], cfg.model_kwargs["num_classes"]
        ([16, 16, 1], 10)
        >>> resolve_config(cfg) == cfg
        True
    """
    config_lib.check_values(config)
    info = data_lib.dataset_info(config.dataset, data_dir=config.data_dir)
    changes = {"model_kwargs": {**_model_kwargs(info), **config.model_kwargs}}
    if config.data_dir is None:
        # The data module's name of the dataset: for "folder:PATH", PATH made absolute.
        changes["dataset"] = info.name
    else:
        # A built-in dataset or "image_folder": the name stays, its folder is data_dir.
        changes["data_dir"] = os.path.abspath(os.path.expanduser(config.data_dir))
    config = dataclasses.replace(config, **changes)
    check_model_settings(config)
    shape = tuple(config.model_kwargs["input_shape"])
    if shape != tuple(info.input_shape):
        raise ConfigError(
            f"model_kwargs.input_shape {shape} does not match the {config.dataset} "
            f"images {tuple(info.input_shape)}; drop the override (it defaults to the "
            "dataset's) or use a dataset of that shape.")
    if config.batch_size % replicas:
        raise ConfigError(
            f"batch_size {config.batch_size} is the global batch and must divide evenly across "
            f"the {replicas} replicas; use a multiple of {replicas}.")
    return config


def dataset_model_kwargs(dataset: str, data_dir=None) -> dict:
    """The model keyword arguments a dataset decides: ``input_shape`` and ``num_classes``."""
    return _model_kwargs(data_lib.dataset_info(dataset, data_dir=data_dir))


def check_model_settings(config: config_lib.TrainConfig) -> None:
    """Refuse, before building anything, an unknown model or an input below its minimum size.

    Example:
        >>> cfg = config_lib.TrainConfig(model="cbcn_resnet18_imagenet",
        ...                              model_kwargs={"input_shape": [16, 16, 3]})
        >>> check_model_settings(cfg)
        Traceback (most recent call last):
        ...
        cbcn_tf.errors.ConfigError: Input shape (16, 16, 3) is too small for cbcn_resnet18_imagenet: its strides downsample by 32, so it needs at least 32x32 inputs. Use a dataset with larger images or set model_kwargs.input_shape to at least [32, 32, C].
    """
    from cbcn_tf.models import list_models, model_min_input_size

    if config.model not in list_models():
        raise ConfigError(
            f"Unknown model {config.model!r}. Valid names: {', '.join(list_models())}.")
    shape = config.model_kwargs.get("input_shape")
    # The product of the model's strides (cbcn_tf.models registry): below it the last stages
    # would run on 1x1 maps padded with constants.
    minimum = model_min_input_size(config.model)
    if shape is None or minimum is None:
        return
    if len(shape) != 3:
        raise ConfigError(f"input_shape must be (height, width, channels), got {tuple(shape)}.")
    if min(shape[:2]) < minimum:
        raise ConfigError(
            f"Input shape {tuple(shape)} is too small for {config.model}: its strides downsample "
            f"by {minimum}, so it needs at least {minimum}x{minimum} inputs. Use a dataset with "
            f"larger images or set model_kwargs.input_shape to at least [{minimum}, {minimum}, C].")


def _model_kwargs(info: data_lib.DatasetInfo) -> dict:
    # Lists, as YAML holds them: the config.yaml read back compares equal.
    return {"input_shape": list(info.input_shape), "num_classes": info.num_classes}
