"""Atomic writes (`cbcn_tf.files` and the writers built on it: the model, config, summary and
history): a failed write leaves the previous complete file or none, and no temp file; temp
files never follow a planted symlink."""
import errno
import os
import tempfile

import cbcn_tf  # noqa: F401  (Keras 2 before tensorflow)
import pytest
import tensorflow as tf

from cbcn_tf import config as config_lib
from cbcn_tf import files, training


def test_atomic_write_never_follows_a_planted_symlink(tmp_path, monkeypatch):
    target = tmp_path / "victim.txt"
    target.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    # The old predictable name, and the next names tempfile would pick.
    (out / f".model.tmp-{os.getpid()}.tflite").symlink_to(target)
    names = [f"plant{i}" for i in range(5)] + ["free1", "free2"]
    for name in names[:5]:
        (out / f".model.{name}.tmp.tflite").symlink_to(target)
    monkeypatch.setattr(tempfile, "_get_candidate_names", lambda: iter(names))
    files.write_bytes(out / "model.tflite", b"new model")
    assert target.read_text() == "precious"
    assert (out / "model.tflite").read_bytes() == b"new model"
    assert not (out / "model.tflite").is_symlink()
    assert all(os.readlink(out / f".model.{n}.tmp.tflite") == str(target) for n in names[:5])
    assert not (out / ".model.free1.tmp.tflite").exists()  # the temp file was renamed away
    monkeypatch.undo()
    files.write_text(out / "note.txt", "hi")  # real random names work too
    assert oct(os.stat(out / "note.txt").st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- interrupted writes ----------------------------------------------------------------------


def _leftovers(folder):
    return [name for name in os.listdir(folder) if ".tmp" in name]


def _failing_save(self, path, *args, **kwargs):
    with open(path, "wb") as handle:
        handle.write(b"\x89HDF\r\n\x1a\n half a model")  # a truncated HDF5 file
    raise OSError(errno.ENOSPC, "No space left on device")


def test_interrupted_model_write_keeps_the_previous_model(tmp_path, monkeypatch):
    model = training.model_from_kwargs("cbcn_lenet", {"input_shape": [16, 16, 1],
                                                      "orientations": 2,
                                                      "kernel_stage": [2, 2, 2, 2]})
    path = tmp_path / "model.h5"
    monkeypatch.setattr(tf.keras.Model, "save", _failing_save)
    with pytest.raises(OSError, match="Could not write .*model.h5: No space left on device"):
        training.save_model(model, path)
    assert not path.exists() and _leftovers(tmp_path) == []

    monkeypatch.undo()
    training.save_model(model, path)
    before = path.read_bytes()
    monkeypatch.setattr(tf.keras.Model, "save", _failing_save)
    with pytest.raises(OSError, match="disk is full"):
        training.save_model(model, path)
    assert path.read_bytes() == before and _leftovers(tmp_path) == []
    assert training.load_model(path).count_params() == model.count_params()


@pytest.mark.parametrize("writer", ["config", "summary", "history"])
def test_interrupted_report_writes_leave_the_target_unchanged(writer, tmp_path, monkeypatch):
    model = tf.keras.Sequential([tf.keras.layers.Dense(2, input_shape=(3,))])
    path = tmp_path / {"config": "config.yaml", "summary": "summary.txt",
                       "history": "history.csv"}[writer]
    write = {
        "config": lambda: config_lib.save_config(config_lib.TrainConfig(epochs=3), path),
        "summary": lambda: training.write_summary(model, path),
        "history": lambda: files.write_csv(path, [{"epoch": 0, "loss": 1.0}] * 3),
    }[writer]
    path.write_text("previous complete version\n")
    real_open = open

    class HalfWriter:  # writes a few bytes, then the disk is full
        def __init__(self, handle):
            self.handle = handle

        def write(self, text):
            self.handle.write(text[:5])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    def failing_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        return HalfWriter(handle) if "w" in mode and ".tmp" in str(file) else handle

    monkeypatch.setattr("builtins.open", failing_open)
    with pytest.raises(OSError, match="Could not write"):
        write()
    monkeypatch.undo()
    assert path.read_text() == "previous complete version\n"
    assert _leftovers(tmp_path) == []
    path.unlink()
    monkeypatch.setattr("builtins.open", failing_open)
    with pytest.raises(OSError):
        write()
    assert not path.exists() and _leftovers(tmp_path) == []
