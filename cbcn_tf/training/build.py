"""From a resolved config (`resolve_config`) to a model."""
from __future__ import annotations

import tensorflow as tf

from cbcn_tf import config as config_lib
from cbcn_tf.errors import ConfigError


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
