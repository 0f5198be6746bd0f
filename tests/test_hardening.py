"""Hardened inputs: each bad input gives one clear `cbcn: error:` line naming the problem and
the fix, and leaves no partial output (the output folder is removed if the command created
it, and holds no model / config files if it existed before)."""
import errno
import os

import cbcn_tf  # noqa: F401  (Keras 2 before tensorflow)
import numpy as np
import pytest
from PIL import Image

from cbcn_tf import cli, training
from cbcn_tf import config as config_lib
from cbcn_tf.models import create_model

TINY = ["model=cbcn_lenet", "model_kwargs.kernel_stage=[2, 2, 2, 2]",
        "model_kwargs.orientations=2", "batch_size=16", "steps_per_epoch=1", "epochs=1",
        "tensorboard=false"]
RUN_FILES = ("config.yaml", "model.h5", "summary.txt", "history.csv", "curves.png", "backup")


def train(output, *sets, recipe="digits_demo", extra=()):
    args = ["train", "--config", str(recipe), "--output", str(output), "--verbose", "0",
            *[a for s in (*TINY, *sets) for a in ("--set", s)], *extra]
    try:
        return cli.main(args)
    except SystemExit as exit_:
        return exit_.code


def error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("cbcn: error: ") and "\n" not in err, err
    return err


def assert_no_output(output, existed=False):
    if existed:
        assert not [name for name in os.listdir(output) if name in RUN_FILES or ".tmp" in name]
    else:
        assert not os.path.exists(output), sorted(os.listdir(output))


def make_folder(root, sizes=((8, 8), (8, 8)), classes=("cat", "dog")):
    rng = np.random.default_rng(0)
    for cls in classes:
        os.makedirs(root / "train" / cls, exist_ok=True)
        for i, (w, h) in enumerate(sizes):
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "train" / cls / f"{i}.jpg", quality=95)
    return root


# --- names, keys, types, shapes --------------------------------------------------------------


@pytest.mark.parametrize("existed", [False, True])
@pytest.mark.parametrize("sets, message", [
    (["model=resnet_typo"], "Unknown model 'resnet_typo'. Valid names: cbcn_lenet, "),
    (["dataset=cifar11"], "Unknown dataset 'cifar11'. Valid names: cifar10, cifar100, digits"),
    (["lrr=0.1"], "unknown config key 'lrr'. Did you mean 'lr'?"),
    (["model_kwargs.kernel_quantizer=gauss_sign"],
     "Unknown quantizer 'gauss_sign'. Use one of gaussian_sign, approx_sign"),
    (["model=cbcn_resnet18_imagenet", "model_kwargs.kernel_stage=[2, 2, 2, 2]"],
     "Input shape (16, 16, 1) is too small for cbcn_resnet18_imagenet: its strides downsample "
     "by 32, so it needs at least 32x32 inputs"),
    (["lr_scaling=linear"], "lr_scaling 'linear' needs base_batch_size"),
    (["batch_size=0"], "config key 'batch_size' must be a positive integer, got 0"),
])
def test_bad_names_fail_cleanly(sets, message, existed, tmp_path, capsys):
    output = tmp_path / "run"
    if existed:
        output.mkdir()
    assert train(output, *sets) == 2
    assert message in error_line(capsys)
    assert_no_output(output, existed)


def test_input_size_check_names_the_minimum_and_passes_at_it():
    cfg = config_lib.TrainConfig(model="cbcn_resnet18_imagenet",
                                 model_kwargs={"input_shape": [32, 32, 3]})
    training.check_model_settings(cfg)  # the minimum itself is fine
    with pytest.raises(ValueError, match="at least 32x32"):
        training.check_model_settings(config_lib.TrainConfig(
            model="cbcn_resnet18_imagenet", model_kwargs={"input_shape": [32, 31, 3]}))
    # The table is the models' real downsampling: a minimum-size input ends on a 1x1 map.
    for name, size in training.MIN_INPUT_SIZE.items():
        kwargs = {"input_shape": (size, size, 3)}
        if name != "cbcn_resnet18_imagenet":
            kwargs["kernel_stage"] = (2, 2, 2, 2) if "resnet" in name else None
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        model = create_model(name, orientations=1 if "xnor" in name else 2, **kwargs)
        pool = next(layer for layer in model.layers
                    if "GlobalAveragePooling2D" in type(layer).__name__)
        assert pool.input_shape[1:3] == (1, 1), (name, pool.input_shape)


@pytest.mark.parametrize("text, message", [
    ("epochs: ten\n", "config key 'epochs' expects int, got 'ten' (str)"),
    ("lr_milestones: 30\n", "config key 'lr_milestones' expects list of int, got 30 (int)"),
    ("optimizer: rmsprop\n", "config key 'optimizer' expects one of ['sgd', 'adam']"),
    ("modell: cbcn_lenet\n", "unknown config key 'modell'. Did you mean 'model'?"),
    ("- a list\n", "must be a YAML mapping of key: value, got list"),
    ("epochs: [1\n", "is not valid YAML"),
])
def test_bad_recipe_files_fail_cleanly(text, message, tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    assert train(tmp_path / "run", recipe=recipe) == 2
    assert message in error_line(capsys)
    assert_no_output(tmp_path / "run")


# --- image folders ---------------------------------------------------------------------------


def _empty_class(root):
    make_folder(root)
    os.makedirs(root / "train" / "bird")
    return f"Class folder {root / 'train' / 'bird'} has no .jpg/.jpeg/.png images"


def _corrupt_jpeg(root):
    make_folder(root)
    path = root / "train" / "dog" / "1.jpg"
    path.write_bytes(path.read_bytes()[:200])  # truncated
    return f"Unreadable image {path}"


def _mixed_sizes(root):
    make_folder(root, sizes=((8, 8), (8, 8), (10, 8)))
    return "Images differ in size"


@pytest.mark.parametrize("make", [_empty_class, _corrupt_jpeg, _mixed_sizes])
def test_bad_image_folders_fail_cleanly(make, tmp_path, capsys):
    message = make(tmp_path / "data")
    code = train(tmp_path / "run", f"dataset=folder:{tmp_path / 'data'}", "eval_split=train",
                 "model_kwargs.input_shape=[8, 8, 3]")
    assert code == 2
    err = error_line(capsys)
    assert message in err
    assert_no_output(tmp_path / "run")


# --- folders with other runs, foreign weights ------------------------------------------------


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("hardening") / "lenet"
    assert train(run, "seed=0") == 0
    return run


def test_folder_holding_another_models_checkpoints_is_refused(lenet_run, tmp_path, capsys):
    import shutil

    # Only the checkpoints (no config.yaml naming the model): e.g. copied by hand.
    output = tmp_path / "run"
    shutil.copytree(lenet_run / "backup", output / "backup")
    before = sorted(os.listdir(output / "backup" / "chief"))
    assert train(output, "model=cbcn_resnet18") == 2
    assert f"{output} already holds a training run" in error_line(capsys)
    for sets in (["model=cbcn_resnet18"], ["model_kwargs.orientations=4"]):
        assert train(output, *sets, extra=["--resume"]) == 2
        assert f"{output / 'backup'} holds checkpoints of another model" in error_line(capsys)
        assert sorted(os.listdir(output)) == ["backup"]  # nothing written
        assert sorted(os.listdir(output / "backup" / "chief")) == before
    # The matching model resumes from them.
    assert train(output, "epochs=2", extra=["--resume"]) == 0
    assert [row["epoch"] for row in training.read_history(output / "history.csv")] == [1]


def test_folder_holding_something_else_is_refused(tmp_path, capsys):
    output = tmp_path / "run"
    (output / "backup" / "chief").mkdir(parents=True)
    (output / "backup" / "chief" / "checkpoint").write_text('model_checkpoint_path: "x"\n')
    assert train(output, extra=["--resume"]) == 2
    assert "does not hold a cbcn training backup" in error_line(capsys)
    assert sorted(os.listdir(output)) == ["backup"]


def test_weights_of_another_architecture_are_refused(tmp_path, capsys):
    weights = str(tmp_path / "lenet.h5")
    create_model("cbcn_lenet", input_shape=(16, 16, 1), orientations=2,
                 kernel_stage=(2, 2, 2, 2)).save_weights(weights)
    assert train(tmp_path / "run", "model=cbcn_resnet18", f"model_kwargs.weights={weights}") == 2
    err = error_line(capsys)
    assert f"Weights file {weights!r} does not match the model 'cbcn_resnet18'" in err
    assert_no_output(tmp_path / "run")
    # The right architecture takes them.
    assert train(tmp_path / "ok", f"model_kwargs.weights={weights}") == 0


# --- read-only or full disks -----------------------------------------------------------------
# Tests run as root, which permission bits do not stop: the failures are simulated.


@pytest.mark.parametrize("code, message", [
    (errno.EROFS, "Read-only file system (the output folder is not writable). Choose a "
                  "writable output folder"),
    (errno.ENOSPC, "No space left on device (the disk is full). Free some space"),
])
def test_unwritable_output_fails_cleanly(code, message, tmp_path, monkeypatch, capsys):
    def failing_replace(src, dst):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "replace", failing_replace)
    output = tmp_path / "new" / "run"
    assert train(output) == 2
    err = error_line(capsys)
    assert "Could not write" in err and message in err
    assert not (tmp_path / "new").exists()  # the command created it, so it removed it

    existing = tmp_path / "existing"
    existing.mkdir()
    assert train(existing) == 2
    assert message in error_line(capsys)
    assert os.listdir(existing) == []


def test_output_folder_that_cannot_be_created(tmp_path, monkeypatch, capsys):
    def failing_makedirs(path, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)

    monkeypatch.setattr(os, "makedirs", failing_makedirs)
    assert train(tmp_path / "run") == 2
    assert "Could not create the output folder" in error_line(capsys)
    assert_no_output(tmp_path / "run")


def test_model_write_failing_at_the_end_leaves_no_model(tmp_path, monkeypatch, capsys):
    """A full disk when the final model is written: no model.h5 and no temp file; the
    checkpoint stays, so `--resume` writes the model once there is space."""
    import tensorflow as tf

    def full_disk(self, path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"\x89HDF\r\n\x1a\n")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tf.keras.Model, "save", full_disk)
    output = tmp_path / "run"
    assert train(output) == 2
    assert "model.h5: No space left on device (the disk is full)" in error_line(capsys)
    assert not (output / "model.h5").exists()
    assert not [name for name in os.listdir(output) if ".tmp" in name]
    monkeypatch.undo()
    assert train(output, extra=["--resume"]) == 0
    assert training.load_model(output).count_params() > 0
