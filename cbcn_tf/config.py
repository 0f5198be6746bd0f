"""Training configs: typed defaults, YAML recipes, ``key=value`` overrides, resolved-config files.

A config is a frozen `TrainConfig`, which converts every value to its field's type when it is
made (from a recipe, an override, config.yaml or code). Recipes (``cbcn_tf/recipes/*.yaml``,
or any YAML file) set some of its keys; ``--set key=value`` overrides are parsed as YAML
values, so ``--set epochs=ten`` or ``--set lrr=0.1`` fail with a message naming the key, what
was expected and the valid keys. ``model_kwargs.NAME=value`` sets one keyword of the model
function (the model function itself rejects unknown ones). Values that cannot work together
(`check_values`), the dataset and the model are checked by `cbcn_tf.training.resolve_config`,
the one step that turns a config into the settings of a run.

Example:
    >>> from cbcn_tf import config
    >>> cfg = config.load_config("digits_demo", ["epochs=2", "model_kwargs.orientations=2"])
    >>> cfg.epochs, cfg.model_kwargs["orientations"]
    (2, 2)
    >>> config.load_config("digits_demo", ["epochs=two"])
    Traceback (most recent call last):
    ...
    cbcn_tf.errors.ConfigError: config key 'epochs' expects int, got 'two' (str).
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from importlib import resources
from typing import Literal, Optional

import yaml

from cbcn_tf import errors
from cbcn_tf.files import atomic_write
from cbcn_tf.strict_yaml import DuplicateKeyError, load_yaml

CONFIG_FILE = "config.yaml"
# Upper bound of ``epochs`` (and of ``center_loss_epochs``): 500 times the longest shipped
# schedule (200), and far inside the int64 epoch counters and seeds of the input pipeline.
MAX_EPOCHS = 100_000

# The choices of the config keys that have a fixed set of values. The CLI's flags and the code
# acting on them take their choices from here.
Optimizer = Literal["sgd", "adam"]
LrScaling = Literal["none", "linear"]
LrDecay = Literal["step", "cosine"]
WeightDecayScope = Literal["all", "kernels", "float_kernels"]
Distribute = Literal["none", "mirrored", "multi_worker"]


# A recipe or override that does not fit `TrainConfig`; the message says how to fix it.
ConfigError = errors.ConfigError


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every knob of a training run. Defaults are the CIFAR-10 recipe of the released code.

    Weight decay is coupled L2 like PyTorch's SGD ``weight_decay`` (``wd * w`` is added to the
    gradient, so it goes through momentum), implemented as the loss ``wd / 2 * sum ||v||^2``.
    ``weight_decay_scope`` picks the variables: ``"all"`` (every trainable variable: what the
    released code does, including the latent binary weights W, BN and PReLU), ``"kernels"``
    (conv / dense kernels, latent binary W included) or ``"float_kernels"`` (float kernels
    only; binary layers' W is left alone). tf-keras' own ``SGD(weight_decay=...)`` is decoupled
    (not scaled by momentum), about 10x weaker at momentum 0.9, so it is not used.
    """

    # Model: a name from cbcn_tf.models.list_models() and keyword arguments of its function.
    # input_shape and num_classes default to the dataset's.
    model: str = "cbcn_resnet18"
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    # Data: a name from cbcn_tf.data.list_datasets(), "folder:PATH" or "image_folder".
    dataset: str = "cifar10"
    data_dir: Optional[str] = None
    train_split: str = "train"
    eval_split: str = "test"
    validation_fraction: Optional[float] = None
    rotate_train: bool = False  # rotated-train protocol (the paper's MNIST-rot / CIFAR10-rot)
    # Schedule (lr_decay "step"): lr * lr_gamma ** (number of milestones <= epoch), epochs
    # counted from 0; "cosine": lr * (1 + cos(pi * epoch / epochs)) / 2, milestones unused.
    lr_decay: LrDecay = "step"
    epochs: int = 200
    steps_per_epoch: Optional[int] = None  # None: one pass over the training split
    # GLOBAL batch size: split evenly across all replicas of all workers.
    batch_size: int = 128
    optimizer: Optimizer = "sgd"
    # lr is the rate at base_batch_size; "linear" scales it by batch_size / base_batch_size
    # (Goyal et al. 2017), "none" uses it as is whatever the batch size.
    lr: float = 0.1
    lr_scaling: LrScaling = "none"
    base_batch_size: Optional[int] = None
    momentum: float = 0.9
    nesterov: bool = True
    lr_milestones: tuple[int, ...] = (60, 120, 160)
    lr_gamma: float = 0.2
    # Linear warm-up: epoch e < lr_warmup_epochs runs at lr * (e + 1) / (lr_warmup_epochs + 1).
    lr_warmup_epochs: int = 0
    weight_decay: float = 5e-4
    weight_decay_scope: WeightDecayScope = "all"
    # Center-loss fine-tuning (docs/METHOD.md §9): center_loss_epochs more epochs after `epochs`.
    center_loss_epochs: int = 0
    center_loss_weight: float = 0.01  # lambda
    center_loss_alpha: float = 0.5  # centre update rate
    # Precise BatchNorm statistics (cbcn_tf/training/precise_bn.py): before each validation and
    # at the end, every BN layer's moving statistics are re-estimated at the current weights
    # as the average over this many training batches (0: Keras' moving averages as trained).
    # Single-process runs only: distributed runs keep Keras' moving averages.
    precise_bn_batches: int = 50
    # Runtime.
    seed: int = 0
    deterministic: bool = False
    # Speed (results unchanged up to float rounding): XLA-compile the train / test steps, run
    # several steps per tf.function call, keep the decoded source images in memory after the
    # first epoch. Measured in BENCHMARKS.md ("Training speed options").
    jit_compile: bool = False
    steps_per_execution: int = 1
    cache: bool = False
    # none | mirrored (all local devices) | multi_worker (MultiWorkerMirroredStrategy, TF_CONFIG)
    distribute: Distribute = "none"
    tensorboard: bool = True

    def __post_init__(self):
        # Every value as its field's type, or a ConfigError naming the key: a TrainConfig made
        # in code is as checked as one read from YAML, and one read back from config.yaml
        # compares equal to the one written (lr_milestones a tuple, model_kwargs plain lists).
        for field in dataclasses.fields(self):
            object.__setattr__(self, field.name, _as_field(field.name, getattr(self, field.name)))

    def as_dict(self) -> dict:
        """Plain YAML-ready values (tuples become lists)."""
        return _plain(dataclasses.asdict(self))


FIELD_TYPES = typing.get_type_hints(TrainConfig)


def valid_keys() -> list:
    return sorted(FIELD_TYPES)


def list_recipes() -> list:
    """Names of the recipes shipped in ``cbcn_tf/recipes``.

    Example:
        >>> "cifar10_resnet18_k4" in list_recipes()
        True
    """
    files = resources.files("cbcn_tf").joinpath("recipes").iterdir()
    return sorted(f.name[:-5] for f in files if f.name.endswith(".yaml"))


def load_config(recipe: str | os.PathLike | None = None, overrides=()) -> TrainConfig:
    """Defaults, then the recipe (a YAML path or a shipped recipe name), then ``key=value``s."""
    values = {}
    if recipe is not None:
        values = _read_recipe(recipe)
    config = from_dict(values, source=f"recipe {str(recipe)!r}")
    return apply_overrides(config, overrides)


def from_dict(values: dict, *, source: str = "config") -> TrainConfig:
    """Build a `TrainConfig` from a (partial) mapping, checking every key and value."""
    if not isinstance(values, dict):
        raise ConfigError(
            f"{source} must be a YAML mapping of key: value, got {type(values).__name__}.")
    for key in values:
        _check_key(key, source)
    return TrainConfig(**values)


def check_values(config: TrainConfig) -> None:
    """Raise ConfigError for values of the right type that still cannot work together
    (`cbcn_tf.training.resolve_config` runs it first).

    Example:
        >>> check_values(TrainConfig(lr_scaling="linear"))
        Traceback (most recent call last):
        ...
        cbcn_tf.errors.ConfigError: lr_scaling 'linear' needs base_batch_size (the batch size lr was tuned for), e.g. --set base_batch_size=256.
    """
    for key in ("epochs", "batch_size", "steps_per_epoch", "base_batch_size",
                "steps_per_execution"):
        value = getattr(config, key)
        if value is not None and value < 1:
            raise ConfigError(f"config key {key!r} must be a positive integer, got {value}.")
    for key in ("epochs", "center_loss_epochs"):
        if getattr(config, key) > MAX_EPOCHS:
            raise ConfigError(f"config key {key!r} is {getattr(config, key)}, above the limit "
                              f"of {MAX_EPOCHS} epochs; use at most {MAX_EPOCHS} (the shipped "
                              "recipes train 16 to 200).")
    if config.precise_bn_batches < 0:
        raise ConfigError("config key 'precise_bn_batches' must be 0 (off) or a positive number "
                          f"of batches, got {config.precise_bn_batches}.")
    if config.lr_scaling == "linear" and config.base_batch_size is None:
        raise ConfigError(
            "lr_scaling 'linear' needs base_batch_size (the batch size lr was tuned for), "
            "e.g. --set base_batch_size=256.")
    if not config.lr > 0:
        raise ConfigError(f"config key 'lr' must be positive, got {config.lr}.")
    if config.dataset == "digits" and config.data_dir is not None:
        raise ConfigError(
            f"config key 'data_dir' ({config.data_dir}) has no use with dataset 'digits', which "
            "ships inside scikit-learn; remove data_dir from the recipe (or --set data_dir=).")


def apply_overrides(config: TrainConfig, overrides) -> TrainConfig:
    """Apply ``"key=value"`` strings (values parsed as YAML, e.g. ``lr_milestones=[30,60]``)."""
    changes = {}
    model_kwargs = dict(config.model_kwargs)
    for key, value in parse_assignments(overrides):
        if key.startswith("model_kwargs."):
            model_kwargs[key.split(".", 1)[1]] = value
            changes["model_kwargs"] = model_kwargs
        else:
            _check_key(key, "--set")
            changes[key] = value
    return dataclasses.replace(config, **changes)


def parse_assignments(items) -> list:
    """``["k=v", ...]`` -> ``[(k, YAML value of v), ...]``; an empty value is None.

    Example:
        >>> parse_assignments(["kernel_stage=[4, 4, 8, 16]", "binary=false"])
        [('kernel_stage', [4, 4, 8, 16]), ('binary', False)]
    """
    pairs = []
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value, e.g. --set epochs=10.")
        try:
            value = load_yaml(text) if text.strip() else None
        except DuplicateKeyError as exc:
            raise ConfigError(f"override {item!r} gives the key {exc.key!r} twice; give it "
                              "once.") from None
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"override {item!r}: value is not valid YAML ({exc.problem}).") from None
        pairs.append((key, value))
    return pairs


def save_config(config: TrainConfig, path) -> None:
    """Write the resolved config as YAML, atomically (temp file + os.replace)."""
    text = yaml.safe_dump(config.as_dict(), sort_keys=False, default_flow_style=None)

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)

    atomic_write(path, write)


def read_config(path) -> TrainConfig:
    """Read a config written by `save_config` (e.g. ``RUN/config.yaml``)."""
    try:
        with open(path, encoding="utf-8") as handle:
            values = load_yaml(handle.read())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        problem = ("it " + exc.describe() if isinstance(exc, DuplicateKeyError)
                   else type(exc).__name__)
        raise ConfigError(f"{path} is not a valid config file ({problem}); restore it or "
                          "delete the run folder.") from None
    if values is None:
        raise ConfigError(f"{path} is empty; restore it or delete the run folder.")
    return from_dict(values, source=str(path))


def _read_recipe(recipe) -> dict:
    path = os.fspath(recipe)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    else:
        name = os.path.basename(path)
        name = name[:-5] if name.endswith(".yaml") else name
        if name not in list_recipes() or os.path.dirname(path):
            raise ConfigError(
                f"recipe {path!r} is neither a file nor a shipped recipe; shipped recipes: "
                f"{', '.join(list_recipes())}."
            )
        text = resources.files("cbcn_tf").joinpath("recipes", f"{name}.yaml").read_text("utf-8")
    try:
        values = load_yaml(text)
    except DuplicateKeyError as exc:
        raise ConfigError(f"recipe {path!r} {exc.describe()}; keep one of them.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"recipe {path!r} is not valid YAML ({problem}{where}); fix the "
                          "file.") from None
    if values is None:
        raise ConfigError(
            f"recipe {path!r} is empty: it sets no key, so every default would apply (a "
            "CIFAR-10 run that downloads the data). Write the keys to set, e.g. `dataset: "
            f"digits`, or pass a shipped recipe: {', '.join(list_recipes())}.")
    return values


def _check_key(key: str, source: str) -> None:
    """Raise ConfigError, naming ``source`` and the closest valid key, if ``key`` is none."""
    if key not in FIELD_TYPES:
        close = difflib.get_close_matches(key, FIELD_TYPES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"{source}: unknown config key {key!r}.{hint} Valid keys: {', '.join(valid_keys())} "
            "(and model_kwargs.NAME for keyword arguments of the model function)."
        )


def _as_field(key: str, value):
    """Return ``value`` converted to the type of field ``key``, or raise ConfigError."""
    kind = FIELD_TYPES[key]
    if typing.get_origin(kind) is Literal and value not in typing.get_args(kind):
        raise ConfigError(
            f"config key {key!r} expects one of {list(typing.get_args(kind))}, got {value!r}.")
    try:
        return _as(value, kind)
    except (TypeError, ValueError):
        raise ConfigError(f"config key {key!r} expects {_type_name(kind)}, got {value!r} "
                          f"({type(value).__name__}).") from None


def _as(value, kind):
    """``value`` as the annotated type ``kind``; TypeError / ValueError if it is not one."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Literal:
        return value
    if origin is typing.Union:  # Optional[X]
        return None if value is None else _as(value, args[0])
    if origin is tuple:  # tuple[X, ...], written as a YAML list
        if not isinstance(value, (list, tuple)):
            raise TypeError(value)
        return tuple(_as(item, args[0]) for item in value)
    if kind is float and not isinstance(value, bool):
        return float(value)  # PyYAML (YAML 1.1) reads "5e-4" as a string: a float to a user
    if kind is dict and isinstance(value, dict):
        return _plain(value)
    if type(value) is kind:
        return value
    raise TypeError(value)


def _type_name(kind) -> str:
    args = typing.get_args(kind)
    if typing.get_origin(kind) is typing.Union:
        return _type_name(args[0]) + " or null"
    if typing.get_origin(kind) is tuple:
        return "list of " + _type_name(args[0])
    return kind.__name__


def _plain(value):
    """Tuples -> lists recursively, so YAML files hold plain lists."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
