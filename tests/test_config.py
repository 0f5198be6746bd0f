"""Configs: recipes, typed overrides, value checks, round trips (the config layer's errors)."""
import dataclasses
import os

import cbcn_tf  # noqa: F401  (Keras 2 before tensorflow)
import numpy as np
import pytest
from PIL import Image

from cbcn_tf import config as config_lib


@pytest.mark.parametrize("recipe", config_lib.list_recipes())
def test_shipped_recipes_name_real_models_and_datasets(recipe):
    from cbcn_tf.data import list_datasets
    from cbcn_tf.models import list_models

    cfg = config_lib.load_config(recipe)
    assert cfg.model in list_models()
    assert cfg.dataset in list_datasets()


def test_overrides_are_typed():
    cfg = config_lib.load_config("cifar10_resnet18_k4", [
        "epochs=3", "lr=1", "weight_decay=5e-4", "lr_milestones=[1, 2]", "nesterov=false",
        "data_dir=", "model_kwargs.kernel_stage=[2, 2, 2, 2]", "distribute=mirrored"])
    assert (cfg.epochs, cfg.lr, cfg.weight_decay, cfg.lr_milestones) == (3, 1.0, 5e-4, (1, 2))
    assert isinstance(cfg.lr, float) and cfg.nesterov is False and cfg.data_dir is None
    assert cfg.model_kwargs == {"kernel_stage": [2, 2, 2, 2], "orientations": 4}
    assert cfg.distribute == "mirrored"


@pytest.mark.parametrize("override, message", [
    ("lrr=0.1", "unknown config key 'lrr'. Did you mean 'lr'? Valid keys: base_batch_size, batch_size,"),
    ("epochs=ten", "config key 'epochs' expects int, got 'ten' (str)"),
    ("epochs=2.5", "config key 'epochs' expects int, got 2.5 (float)"),
    ("nesterov=1", "config key 'nesterov' expects bool, got 1 (int)"),
    ("lr_milestones=[1, a]", "config key 'lr_milestones' expects list of int"),
    ("distribute=tpu", "config key 'distribute' expects one of ['none', 'mirrored', 'multi_worker'], got 'tpu'"),
    ("epochs", "override 'epochs' is not key=value"),
])
def test_bad_overrides_say_what_is_wrong(override, message):
    with pytest.raises(config_lib.ConfigError) as info:
        config_lib.load_config("digits_demo", [override])
    assert message in str(info.value)


@pytest.mark.parametrize("text, message", [
    ("epochs: ten\n", "config key 'epochs' expects int, got 'ten' (str)"),
    ("lr_milestones: 30\n", "config key 'lr_milestones' expects list of int, got 30 (int)"),
    ("optimizer: rmsprop\n", "config key 'optimizer' expects one of ['sgd', 'adam']"),
    ("modell: cbcn_lenet\n", "unknown config key 'modell'. Did you mean 'model'?"),
    ("- a list\n", "must be a YAML mapping of key: value, got list"),
    ("epochs: [1\n", "is not valid YAML"),
])
def test_bad_recipe_files_say_what_is_wrong(text, message, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    with pytest.raises(config_lib.ConfigError) as info:
        config_lib.load_config(str(recipe))
    assert message in str(info.value)


def test_unknown_recipe_lists_shipped_ones():
    with pytest.raises(config_lib.ConfigError, match="shipped recipes: cifar10_resnet18_k4, "
                                                     "digits_demo"):
        config_lib.load_config("cifar_typo")


@pytest.mark.parametrize("overrides, message", [
    (["lr_scaling=linear"], "lr_scaling 'linear' needs base_batch_size"),
    (["batch_size=0"], "config key 'batch_size' must be a positive integer, got 0"),
    (["lr=0"], "config key 'lr' must be positive, got 0.0"),
])
def test_values_that_cannot_work_are_refused(overrides, message):
    with pytest.raises(config_lib.ConfigError) as info:
        config_lib.check_values(config_lib.load_config("digits_demo", overrides))
    assert message in str(info.value)


def test_config_round_trips_through_yaml(tmp_path):
    cfg = config_lib.load_config("cifar10_resnet18_k4", ["model_kwargs.tied=true", "seed=7"])
    config_lib.save_config(cfg, tmp_path / "config.yaml")
    assert config_lib.read_config(tmp_path / "config.yaml") == cfg


def test_configs_made_in_code_are_typed_and_round_trip(tmp_path):
    with pytest.raises(config_lib.ConfigError) as info:
        config_lib.TrainConfig(distribute="tpu")
    assert str(info.value) == ("config key 'distribute' expects one of ['none', 'mirrored', "
                               "'multi_worker'], got 'tpu'.")
    with pytest.raises(config_lib.ConfigError, match="'epochs' expects int, got 2.5"):
        config_lib.TrainConfig(epochs=2.5)
    cfg = config_lib.TrainConfig(lr=1, lr_milestones=[3, 5],
                                 model_kwargs={"input_shape": (16, 16, 1)})
    assert type(cfg.lr) is float and cfg.lr_milestones == (3, 5)
    config_lib.save_config(cfg, tmp_path / "config.yaml")
    assert config_lib.read_config(tmp_path / "config.yaml") == cfg


# --- training.resolve_config: the one step from a config to a run's settings -----------------


def test_resolve_fills_what_the_dataset_decides_and_is_stable(tmp_path):
    from cbcn_tf import data, training

    cfg = config_lib.load_config("digits_demo", ["model_kwargs.orientations=2"])
    resolved = training.resolve_config(cfg)
    info = data.dataset_info("digits")
    assert resolved.model_kwargs == {**cfg.model_kwargs, "num_classes": info.num_classes,
                                     "input_shape": list(info.input_shape)}
    assert dataclasses.replace(resolved, model_kwargs=cfg.model_kwargs) == cfg
    # A restarted run recognises its config.yaml: resolving again and reading back change
    # nothing.
    assert training.resolve_config(resolved) == resolved
    config_lib.save_config(resolved, tmp_path / "config.yaml")
    assert config_lib.read_config(tmp_path / "config.yaml") == resolved


def test_resolve_makes_image_folder_paths_absolute(tmp_path, monkeypatch):
    from PIL import Image

    from cbcn_tf import training

    rng = np.random.default_rng(0)
    for cls in ("a", "b", "c"):
        os.makedirs(tmp_path / "imgs" / "train" / cls)
        Image.fromarray(rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)).save(
            tmp_path / "imgs" / "train" / cls / "0.png")
    monkeypatch.chdir(tmp_path)
    root = str(tmp_path / "imgs")
    by_name = training.resolve_config(config_lib.load_config(
        "digits_demo", ["dataset=folder:imgs", "eval_split=train"]))
    assert (by_name.dataset, by_name.data_dir) == (f"folder:{root}", None)
    by_dir = training.resolve_config(config_lib.load_config(
        "digits_demo", ["dataset=image_folder", "data_dir=imgs", "eval_split=train"]))
    assert (by_dir.dataset, by_dir.data_dir) == ("image_folder", root)
    for resolved in (by_name, by_dir):
        assert resolved.model_kwargs["input_shape"] == [8, 12, 3]
        assert resolved.model_kwargs["num_classes"] == 3
        monkeypatch.chdir("/")  # the resolved settings hold no relative path
        assert training.resolve_config(resolved) == resolved
        monkeypatch.chdir(tmp_path)


def test_config_yaml_stores_absolute_paths(tmp_path, monkeypatch, capsys, run_cli, train_cli):
    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            os.makedirs(root / split / cls)
            for i in range(4):
                Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(
                    root / split / cls / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    assert train_cli("run", "dataset=image_folder", "data_dir=imgs") == 0
    saved = config_lib.read_config(tmp_path / "run" / "config.yaml")
    assert saved.data_dir == str(root)
    monkeypatch.chdir(tmp_path / "run")  # evaluate and resume from elsewhere
    capsys.readouterr()
    assert run_cli("evaluate", ".", "--no-rotated") == 0
    assert train_cli(".", "dataset=image_folder", f"data_dir={root}", "epochs=2",
                     extra=["--resume"]) == 0


@pytest.mark.parametrize("overrides, replicas, message", [
    (["lr=0"], 1, "config key 'lr' must be positive, got 0.0"),
    (["dataset=digitz"], 1, "Unknown dataset 'digitz'"),
    (["model=cbcn_lenett"], 1, "Unknown model 'cbcn_lenett'"),
    (["model_kwargs.input_shape=[28, 28, 1]"], 1,
     "model_kwargs.input_shape (28, 28, 1) does not match the digits images (16, 16, 1)"),
    (["batch_size=30"], 4, "batch_size 30 is the global batch and must divide evenly across "
                           "the 4 replicas; use a multiple of 4."),
])
def test_resolve_refuses_settings_that_cannot_work(overrides, replicas, message):
    from cbcn_tf import errors, training

    cfg = config_lib.load_config("digits_demo", overrides)
    with pytest.raises(errors.CbcnError) as info:
        training.resolve_config(cfg, replicas=replicas)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_resolve_accepts_a_batch_that_splits_evenly():
    from cbcn_tf import training

    cfg = config_lib.load_config("digits_demo", ["batch_size=32"])
    assert training.resolve_config(cfg, replicas=4).batch_size == 32
