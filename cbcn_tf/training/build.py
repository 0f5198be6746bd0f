"""From a config to a model: dataset-derived model_kwargs, checks before building, building."""
from __future__ import annotations

import dataclasses

import tensorflow as tf

from cbcn_tf import config as config_lib
from cbcn_tf import data as data_lib
from cbcn_tf.errors import ConfigError

def dataset_model_kwargs(dataset: str, data_dir=None) -> dict:
    """The model keyword arguments a dataset decides: ``input_shape`` and ``num_classes``."""
    info = data_lib.dataset_info(dataset, data_dir=data_dir)
    return {"input_shape": list(info.input_shape), "num_classes": info.num_classes}


def resolve_config(config: config_lib.TrainConfig) -> config_lib.TrainConfig:
    """Fill ``model_kwargs`` input_shape / num_classes from the dataset unless given."""
    kwargs = dataset_model_kwargs(config.dataset, config.data_dir)
    kwargs.update(config.model_kwargs)
    return config_lib.with_absolute_paths(dataclasses.replace(config, model_kwargs=kwargs))


def check_input_shape(config: config_lib.TrainConfig) -> None:
    """Refuse a ``model_kwargs.input_shape`` that differs from the dataset's images."""
    info = data_lib.dataset_info(config.dataset, data_dir=config.data_dir)
    shape = config.model_kwargs.get("input_shape")
    if shape is not None and tuple(shape) != tuple(info.input_shape):
        raise ConfigError(
            f"model_kwargs.input_shape {tuple(shape)} does not match the {config.dataset} "
            f"images {tuple(info.input_shape)}; drop the override (it defaults to the "
            "dataset's) or use a dataset of that shape.")


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


def build_model(config: config_lib.TrainConfig) -> tf.keras.Model:
    """The model of ``config``: `model_from_kwargs` of its model and model_kwargs."""
    return model_from_kwargs(config.model, config.model_kwargs)


def model_from_kwargs(name: str, kwargs: dict) -> tf.keras.Model:
    """``cbcn_tf.models.create_model(name, **kwargs)`` (lists as tuples); ValueError for
    keyword arguments the model function does not take."""
    from cbcn_tf.models import create_model

    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    try:
        return create_model(name, **kwargs)
    except (TypeError, ValueError) as exc:  # a keyword or value from the recipe or --set
        raise ConfigError(f"Model keyword arguments do not fit {name}: {exc}.") from None
