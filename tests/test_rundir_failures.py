"""A `cbcn train` that fails leaves nothing behind (`cbcn_tf.training.rundir`): each bad input
gives one clear `cbcn: error:` line naming the problem and the fix, and the output folder is
removed if the command created it, and holds no model / config files if it existed before.
One scenario per stage of `cbcn train` (each layer's own tests cover the other inputs that
fail at that stage), then paths and disks that cannot be written. test_rundir.py checks
locking, symlinks, --resume and full disks during training."""
import errno
import os

import cbcn_tf  # noqa: F401  (Keras 2 before tensorflow)
import pytest

from cbcn_tf import training
from cbcn_tf.models import create_model

RUN_FILES = ("config.yaml", "model.h5", "summary.txt", "history.csv", "curves.png", "backup")


def assert_no_output(output, existed=False):
    if existed:
        assert not [name for name in os.listdir(output) if name in RUN_FILES or ".tmp" in name]
    else:
        assert not os.path.exists(output), sorted(os.listdir(output))


# --- one bad input per stage of `cbcn train` -------------------------------------------------


@pytest.mark.parametrize("existed", [False, True])
@pytest.mark.parametrize("sets, message", [
    # the config: types, then values that cannot work together
    (["epochs=ten"], "config key 'epochs' expects int, got 'ten' (str)"),
    (["batch_size=0"], "config key 'batch_size' must be a positive integer, got 0"),
    # the dataset
    (["dataset=cifar11"], "Unknown dataset 'cifar11'. Valid names: cifar10, cifar100, digits"),
    (["dataset=folder:/no/such/folder"], "Image folder /no/such/folder does not exist"),
    # the model: name, input size, keyword arguments, quantizer names
    (["model=resnet_typo"], "Unknown model 'resnet_typo'. Valid names: cbcn_lenet, "),
    (["model=cbcn_resnet18_imagenet", "model_kwargs.kernel_stage=[2, 2, 2, 2]"],
     "Input shape (16, 16, 1) is too small for cbcn_resnet18_imagenet: its strides downsample "
     "by 32, so it needs at least 32x32 inputs"),
    (["model_kwargs.no_such_kwarg=1"], "Model keyword arguments do not fit cbcn_lenet"),
    (["model_kwargs.kernel_quantizer=gauss_sign"],
     "Unknown quantizer 'gauss_sign'. Use one of gaussian_sign, approx_sign"),
])
def test_bad_names_fail_cleanly(sets, message, existed, tmp_path, train_cli, error_line):
    output = tmp_path / "run"
    if existed:
        output.mkdir()
    assert train_cli(output, *sets) == 2
    assert message in error_line()
    assert_no_output(output, existed)


def test_unreadable_image_fails_cleanly(tmp_path, make_folder, train_cli, error_line):
    """Images are checked while the input pipeline is built, after the folder was created."""
    make_folder(tmp_path / "data")
    path = tmp_path / "data" / "train" / "dog" / "1.jpg"
    path.write_bytes(path.read_bytes()[:200])  # truncated
    code = train_cli(tmp_path / "run", f"dataset=folder:{tmp_path / 'data'}", "eval_split=train",
                     "model_kwargs.input_shape=[8, 8, 3]")
    assert code == 2
    assert f"Unreadable image {path}" in error_line()
    assert_no_output(tmp_path / "run")


def test_weights_of_another_architecture_are_refused(tmp_path, train_cli, error_line):
    weights = str(tmp_path / "lenet.h5")
    create_model("cbcn_lenet", input_shape=(16, 16, 1), orientations=2,
                 kernel_stage=(2, 2, 2, 2)).save_weights(weights)
    assert train_cli(tmp_path / "run", "model=cbcn_resnet18",
                     f"model_kwargs.weights={weights}") == 2
    err = error_line()
    assert f"Weights file {weights!r} does not match the model 'cbcn_resnet18'" in err
    assert_no_output(tmp_path / "run")
    # The right architecture takes them.
    assert train_cli(tmp_path / "ok", f"model_kwargs.weights={weights}") == 0


# --- paths that cannot be written ------------------------------------------------------------


def test_output_path_that_is_not_utf8_is_refused(tmp_path, train_cli, error_line):
    run = str(tmp_path / os.fsdecode(b"run\xff"))
    assert train_cli(run) == 2
    assert "is not valid UTF-8" in error_line()
    assert os.listdir(tmp_path) == []


def test_too_long_output_path_leaves_nothing(tmp_path, train_cli, error_line):
    long_name = tmp_path / "top" / os.path.join(*["d"] * 20) / ("x" * 300)
    assert train_cli(long_name) == 2
    assert "bytes long, and this file system allows" in error_line()
    deep = tmp_path / "top" / os.path.join(*["d" * 200] * 20)  # > 4096 bytes in all
    assert train_cli(deep) == 2
    assert "paths are limited to" in error_line()
    assert os.listdir(tmp_path) == []


def test_folders_made_before_a_failing_mkdir_are_removed(tmp_path, monkeypatch, train_cli,
                                                         error_line):
    real_mkdir = os.mkdir

    def mkdir(path, *args, **kwargs):
        if os.path.basename(path) == "run":
            raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), path)
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    assert train_cli(tmp_path / "a" / "b" / "c" / "run") == 2
    assert "Could not create the output folder" in error_line()
    assert os.listdir(tmp_path) == []


# --- read-only or full disks -----------------------------------------------------------------
# Tests run as root, which permission bits do not stop: the failures are simulated.


@pytest.mark.parametrize("code, message", [
    (errno.EROFS, "Read-only file system (the output folder is not writable). Choose a "
                  "writable output folder"),
    (errno.ENOSPC, "No space left on device (the disk is full). Free some space"),
])
def test_unwritable_output_fails_cleanly(code, message, tmp_path, monkeypatch, train_cli,
                                         error_line):
    def failing_replace(src, dst):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "replace", failing_replace)
    output = tmp_path / "new" / "run"
    assert train_cli(output) == 2
    err = error_line()
    assert "Could not write" in err and message in err
    assert not (tmp_path / "new").exists()  # the command created it, so it removed it

    existing = tmp_path / "existing"
    existing.mkdir()
    assert train_cli(existing) == 2
    assert message in error_line()
    assert os.listdir(existing) == []


def test_output_folder_that_cannot_be_created(tmp_path, monkeypatch, train_cli, error_line):
    def failing_makedirs(path, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)

    monkeypatch.setattr(os, "makedirs", failing_makedirs)
    assert train_cli(tmp_path / "run") == 2
    assert "Could not create the output folder" in error_line()
    assert_no_output(tmp_path / "run")


def test_model_write_failing_at_the_end_leaves_no_model(tmp_path, monkeypatch, train_cli,
                                                        error_line):
    """A full disk when the final model is written: no model.h5 and no temp file; the
    checkpoint stays, so `--resume` writes the model once there is space."""
    import tensorflow as tf

    def full_disk(self, path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"\x89HDF\r\n\x1a\n")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tf.keras.Model, "save", full_disk)
    output = tmp_path / "run"
    assert train_cli(output) == 2
    assert "model.h5: No space left on device (the disk is full)" in error_line()
    assert not (output / "model.h5").exists()
    assert not [name for name in os.listdir(output) if ".tmp" in name]
    monkeypatch.undo()
    assert train_cli(output, extra=["--resume"]) == 0
    assert training.load_model(output).count_params() > 0
