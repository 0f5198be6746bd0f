"""Packaged weights (cbcn_tf.models.pretrained): the registry mechanism on a model written
here, and the shipped entries against their recorded test errors on the real MNIST test set."""
import json
import shutil

import numpy as np
import pytest

from cbcn_tf import training
from cbcn_tf.errors import ConfigError, ModelFileError
from cbcn_tf.models import create_model, list_pretrained, pretrained
from tests.reference import MNIST_TEST_ROOT

TINY = dict(input_shape=(16, 16, 1), kernel_stage=(2, 2, 2, 2), orientations=2)


@pytest.fixture
def tiny_registry(tmp_path, monkeypatch):
    """A registry folder holding one tiny CBCN LeNet's weights as ``cbcn_lenet:tiny``."""
    model = create_model("cbcn_lenet", **TINY)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(size=w.shape).astype(w.dtype) for w in model.get_weights()])
    path = tmp_path / "cbcn_lenet_tiny.h5"
    model.save_weights(str(path), save_format="h5")
    entry = dict(name="cbcn_lenet", weights="tiny", function="cbcn_lenet", kwargs=TINY,
                 file=path.name, sha256=pretrained.sha256(path), dataset="digits",
                 rotate=False, split="test", test_error=0.0, errors=0, images=0,
                 recipe="digits_demo", seed=0, epochs=1, command="cbcn train ...")
    (tmp_path / pretrained.REGISTRY_FILE).write_text(json.dumps([entry]))
    monkeypatch.setattr(pretrained, "_folder", lambda: tmp_path)
    return model, path


def test_weights_name_loads_the_packaged_file(tiny_registry):
    model, _ = tiny_registry
    loaded = create_model("cbcn_lenet", **TINY, weights="tiny")
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    spec = training.load_model("cbcn_lenet:tiny")  # NAME:WEIGHTS as the commands take it
    for a, b in zip(model.get_weights(), spec.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert [row["spec"] for row in list_pretrained()] == ["cbcn_lenet:tiny"]


def test_unknown_weights_name_is_one_line_listing_the_names(tiny_registry):
    with pytest.raises(ConfigError) as info:
        create_model("cbcn_lenet", **TINY, weights="imagenet")
    message = str(info.value)
    assert "\n" not in message and "'imagenet'" in message and "cbcn_lenet:tiny" in message
    with pytest.raises(ConfigError):  # a known name for another model
        create_model("xnor_lenet", input_shape=(16, 16, 1), weights="tiny")


def test_damaged_packaged_file_is_refused_by_sha256(tiny_registry):
    _, path = tiny_registry
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="sha256"):
        create_model("cbcn_lenet", **TINY, weights="tiny")


def test_a_file_path_is_still_a_file(tmp_path, tiny_registry):
    model, path = tiny_registry
    copy = tmp_path / "copy.h5"
    shutil.copy(path, copy)
    loaded = create_model("cbcn_lenet", **TINY, weights=str(copy))
    np.testing.assert_array_equal(model.get_weights()[0], loaded.get_weights()[0])
    assert pretrained.parse_spec(str(copy)) is None
    assert pretrained.parse_spec("no_colon") is None


def test_list_models_shows_the_registry(tiny_registry, run_cli, capsys):
    assert run_cli("list-models") == 0
    assert "cbcn_lenet:tiny" in capsys.readouterr().out


# --- the shipped entries ------------------------------------------------------------------------

SHIPPED = list_pretrained()


@pytest.mark.parametrize("row", SHIPPED, ids=[row["spec"] for row in SHIPPED])
def test_shipped_weights_match_their_registry_row(row):
    entry = pretrained.find(row["name"], row["weights"])
    assert pretrained.sha256(entry.path()) == row["sha256"]
    model = training.load_model(row["spec"])
    assert model.name == row["name"]
    assert row["command"].startswith("cbcn train ") and f"seed={row['seed']}" in row["command"]


@pytest.mark.slow  # 10,000 MNIST test images per packaged model
@pytest.mark.parametrize("row", SHIPPED, ids=[row["spec"] for row in SHIPPED])
def test_shipped_weights_reproduce_their_test_error(row):
    """What `cbcn evaluate NAME:WEIGHTS --data-dir MNIST` computes: the recorded error, exactly."""
    options = training.run_eval_options(row["spec"], data_dir=MNIST_TEST_ROOT)
    model = training.load_model(row["spec"])
    scores = training.evaluate(model, rotate=row["rotate"], **options)
    errors = row["images"] - round(scores["top1"] * row["images"])
    assert errors == row["errors"]
