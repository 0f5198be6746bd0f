"""Recipe and config-file errors of cbcn_tf.config: empty files, keys given twice, settings
that would be ignored. Each is a ConfigError of one line naming the file or key."""
import cbcn_tf  # noqa: F401  (Keras 2 before tensorflow)
import pytest

from cbcn_tf import config as config_lib
from cbcn_tf.strict_yaml import DuplicateKeyError, load_yaml


def _one_line(info):
    message = str(info.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_recipe_is_refused_naming_the_file(text, tmp_path):
    recipe = tmp_path / "empty.yaml"
    recipe.write_text(text)
    with pytest.raises(config_lib.ConfigError) as info:
        config_lib.load_config(str(recipe))
    message = _one_line(info)
    assert str(recipe) in message and "empty" in message and "digits_demo" in message


@pytest.mark.parametrize("text, key, lines", [
    ("dataset: digits\nepochs: 2\nlr: 0.1\nepochs: 30\n", "epochs", "lines 2 and 4"),
    ("dataset: digits\nmodel_kwargs:\n  orientations: 2\n  orientations: 4\n", "orientations",
     "lines 3 and 4"),
])
def test_recipe_key_given_twice_is_refused(text, key, lines, tmp_path):
    recipe = tmp_path / "twice.yaml"
    recipe.write_text(text)
    with pytest.raises(config_lib.ConfigError) as info:
        config_lib.load_config(str(recipe))
    message = _one_line(info)
    assert str(recipe) in message and f"{key!r} twice, on {lines}" in message
    # Without the repeated line the recipe loads.
    recipe.write_text("".join(text.splitlines(keepends=True)[:-1]))
    assert config_lib.load_config(str(recipe)).dataset == "digits"


def test_yaml_merge_keys_may_override_without_being_duplicates():
    assert load_yaml("base: &b {a: 1, b: 2}\nrun:\n  <<: *b\n  a: 3\n")["run"] == {"a": 3, "b": 2}
    with pytest.raises(DuplicateKeyError):
        load_yaml("a: 1\nb: 2\na: 1\n")


def test_override_value_with_a_key_twice_is_refused():
    with pytest.raises(config_lib.ConfigError) as info:
        config_lib.load_config("digits_demo", ["model_kwargs.invariant={pool: max, pool: align}"])
    assert "'pool' twice" in _one_line(info)


def test_run_config_that_is_empty_or_has_a_key_twice_is_refused(tmp_path):
    path = tmp_path / "config.yaml"
    config_lib.save_config(config_lib.load_config("digits_demo"), path)
    good = path.read_text()
    path.write_text("")
    with pytest.raises(config_lib.ConfigError) as info:
        config_lib.read_config(path)
    assert str(path) in _one_line(info) and "empty" in str(info.value)
    path.write_text(good + "epochs: 1\n")
    with pytest.raises(config_lib.ConfigError) as info:
        config_lib.read_config(path)
    assert str(path) in _one_line(info) and "'epochs' twice" in str(info.value)


def test_data_dir_with_the_digits_is_refused():
    cfg = config_lib.load_config("digits_demo", ["data_dir=/some/folder"])
    with pytest.raises(config_lib.ConfigError) as info:
        config_lib.check_values(cfg)
    message = _one_line(info)
    assert "data_dir" in message and "digits" in message and "scikit-learn" in message
    config_lib.check_values(config_lib.load_config("digits_demo", ["data_dir="]))
