"""`cbcn demo` (`cbcn_tf.demo`): its arguments and the folders it would replace are checked
before anything is removed."""
import os

import cbcn_tf  # noqa: F401  (Keras 2 before tensorflow)
import pytest

from cbcn_tf import config as config_lib
from cbcn_tf.errors import ConfigError


def _fake_demo_run(run_dir, overrides=()):
    os.makedirs(run_dir / "backup")
    config_lib.save_config(config_lib.load_config("digits_demo", list(overrides)),
                           run_dir / "config.yaml")
    for name in ("history.csv", "model.h5", "summary.txt", "curves.png"):
        (run_dir / name).write_text("x")
    (run_dir / "notes.txt").write_text("mine")


def test_demo_checks_arguments_before_touching_anything(tmp_path, run_cli):
    from cbcn_tf import demo

    out = tmp_path / "demo"
    _fake_demo_run(out / "cbcn")
    before = sorted(os.listdir(out / "cbcn"))
    with pytest.raises(ConfigError, match="epochs"):
        demo.run_demo(str(out), epochs=0)
    assert sorted(os.listdir(out / "cbcn")) == before
    assert run_cli("demo", "--output", out, "--epochs", "0") == 2
    assert sorted(os.listdir(out / "cbcn")) == before

    # A folder of an arm's name that is not a demo run: refused before anything is removed.
    (out / "xnor").mkdir()
    (out / "xnor" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a demo run"):
        demo.run_demo(str(out), epochs=1)
    assert sorted(os.listdir(out / "cbcn")) == before

    demo._remove_previous_run(str(out / "cbcn"))  # what a valid rerun removes
    assert os.listdir(out / "cbcn") == ["notes.txt"]
