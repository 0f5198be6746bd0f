"""Bad arguments of the `cbcn` commands found by using them: each is one `cbcn: error:` line
and exit code 2 before any work (nothing written), or a one-line `cbcn: warning:`; an error
that is not a user error (a bug) keeps its traceback."""
import errno
import os
import tempfile
import warnings

import cbcn_tf  # noqa: F401  (Keras 2 before tensorflow)
import pytest

from cbcn_tf import cli, training
from cbcn_tf.errors import ExportError
from cbcn_tf.training import distribute


def _train(run_cli, output, *args, recipe="digits_demo"):
    return run_cli("train", "--config", recipe, "--output", output, "--verbose", "0", *args)


# --- cbcn train --------------------------------------------------------------------------------


@pytest.mark.parametrize("flag, setting", [
    (["--batch-size", "16"], "batch_size=64"),
    (["--seed", "1"], "seed=2"),
    (["--deterministic"], "deterministic=false"),
    (["--distribute", "mirrored"], "distribute=none"),
    (["--lr-scaling", "none"], "lr_scaling=linear"),
])
def test_a_key_given_as_flag_and_with_set_is_refused(flag, setting, tmp_path, run_cli,
                                                     error_line):
    output = tmp_path / "run"
    assert _train(run_cli, output, *flag, "--set", setting) == 2
    err = error_line()
    assert flag[0] in err and f"--set {setting}" in err and "only one" in err
    assert not output.exists()


def test_flags_and_other_set_keys_combine():
    args = cli._parser().parse_args(["train", "--config", "digits_demo", "--output", "x",
                                     "--batch-size", "16", "--set", "epochs=3"])
    cfg = cli._train_config(args)
    assert (cfg.batch_size, cfg.epochs) == (16, 3)


@pytest.mark.parametrize("text, what", [("", "empty"), ("dataset: digits\nepochs: 1\nepochs: 2\n",
                                                        "'epochs' twice")])
def test_empty_recipe_or_key_twice_stops_before_anything(text, what, tmp_path, run_cli,
                                                         error_line):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    output = tmp_path / "run"
    assert _train(run_cli, output, recipe=recipe) == 2
    err = error_line()
    assert str(recipe) in err and what in err
    assert sorted(os.listdir(tmp_path)) == ["recipe.yaml"]  # no run folder, no TFDS temp files


def test_data_dir_with_the_digits_is_refused(tmp_path, run_cli, error_line):
    output = tmp_path / "run"
    assert _train(run_cli, output, "--set", f"data_dir={tmp_path}") == 2
    err = error_line()
    assert "data_dir" in err and "'digits'" in err
    assert not output.exists()


def test_multi_worker_without_tf_config_warns_in_one_line(monkeypatch, capsys):
    def config(*args):
        return cli._train_config(cli._parser().parse_args(
            ["train", "--config", "digits_demo", "--output", "x", *args]))

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert config("--distribute", "multi_worker").distribute == "multi_worker"
    err = capsys.readouterr().err.strip()
    assert err.startswith("cbcn: warning: ") and "\n" not in err
    assert "TF_CONFIG" in err and "docs/DISTRIBUTED.md" in err
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["localhost:1"]}, '
                                    '"task": {"type": "worker", "index": 0}}')
    config("--distribute", "multi_worker")
    config("--distribute", "none")
    assert capsys.readouterr().err == ""


def test_make_strategy_warns_for_multi_worker_without_tf_config(monkeypatch):
    made = []
    monkeypatch.setitem(distribute._FACTORIES, "multi_worker", lambda: made.append(1) or "s")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.warns(distribute.SingleWorkerWarning, match="TF_CONFIG"):
        assert distribute.make_strategy("multi_worker") == "s"
    monkeypatch.setenv("TF_CONFIG", "{}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        distribute.make_strategy("multi_worker")
    assert len(made) == 2


def test_cli_keeps_the_traceback_of_a_bug(monkeypatch, tmp_path, train_cli):
    """A ValueError / OSError that is not a CbcnError is a bug: it propagates."""
    def buggy(*args, **kwargs):
        raise ValueError("a bug inside TensorFlow")

    monkeypatch.setattr(training, "train", buggy)
    with pytest.raises(ValueError, match="a bug inside TensorFlow"):
        train_cli(tmp_path / "run")
    monkeypatch.setattr(training, "train", lambda *a, **k: (_ for _ in ()).throw(OSError(5, "io")))
    with pytest.raises(OSError):
        train_cli(tmp_path / "run")


# --- cbcn evaluate / benchmark --------------------------------------------------------------------


@pytest.mark.parametrize("size", ["0", "-3"])
def test_evaluate_batch_size_must_be_positive(size, tmp_path, run_cli, error_line):
    # Checked before the run is loaded: the (missing) run is not what the line names.
    assert run_cli("evaluate", tmp_path / "run", "--batch-size", size) == 2
    err = error_line()
    assert "--batch-size" in err and size in err


@pytest.mark.parametrize("threads", [["-5"], ["0"], ["1", "0"]])
def test_benchmark_threads_must_be_one_or_more(threads, tmp_path, run_cli, error_line):
    # Checked before the file is read: the (missing) file is not what the line names.
    assert run_cli("benchmark", tmp_path / "model.tflite", "--threads", *threads) == 2
    err = error_line()
    assert "--threads" in err and threads[-1] in err.split("got")[-1]


def test_benchmark_api_refuses_thread_counts_below_one():
    from cbcn_tf.converters.benchmark import benchmark_tflite, check_settings

    for threads in [(0,), (-1,), (), (1.5,)]:
        with pytest.raises(ExportError, match=r"threads \(--threads\) must be 1 or more"):
            benchmark_tflite(b"not read", threads=threads)
    check_settings(threads=(1, 2))


# --- cbcn convert --------------------------------------------------------------------------------


def test_convert_into_a_missing_folder_fails_before_converting(tiny_run, tmp_path, monkeypatch,
                                                               run_cli, error_line):
    import cbcn_tf.converters as converters

    def must_not_run(*args, **kwargs):
        raise AssertionError("converted before checking the destination")

    monkeypatch.setattr(converters, "export_lce", must_not_run)
    monkeypatch.setattr(training, "load_model", must_not_run)
    target = tmp_path / "missing" / "m.tflite"
    assert run_cli("convert", tiny_run, target) == 2
    err = error_line()
    assert str(tmp_path / "missing") in err and "does not exist" in err and ".tmp" not in err
    assert not (tmp_path / "missing").exists()


@pytest.mark.lce
def test_float_export_of_a_binary_model_warns(tiny_run, tmp_path, capsys, run_cli):
    assert run_cli("convert", tiny_run, tmp_path / "f.tflite", "--float", "--no-verify") == 0
    err = capsys.readouterr().err
    assert "cbcn: warning:" in err and "32x larger" in err
    assert (tmp_path / "f.tflite").stat().st_size > 0


# --- cbcn demo ---------------------------------------------------------------------------------
# Tests run as root, which permission bits do not stop: a read-only disk is simulated.


def _read_only(code=errno.EROFS):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    return fail


def test_demo_into_a_read_only_folder_is_one_line(tmp_path, monkeypatch, run_cli, error_line):
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    monkeypatch.setattr(tempfile, "mkstemp", _read_only())
    assert run_cli("demo", "--output", existing, "--epochs", "1") == 2
    err = error_line()
    assert str(existing) in err and "Read-only file system" in err
    assert os.listdir(existing) == ["notes.txt"]

    monkeypatch.setattr(os, "makedirs", _read_only())
    new = tmp_path / "new" / "demo"
    assert run_cli("demo", "--output", new, "--epochs", "1") == 2
    assert "Read-only file system" in error_line()
    assert not (tmp_path / "new").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0o555 folder regardless")
def test_demo_into_a_folder_without_write_permission(tmp_path, run_cli, error_line):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert run_cli("demo", "--output", locked / "demo", "--epochs", "1") == 2
        assert "not writable" in error_line()
        assert os.listdir(locked) == []
    finally:
        locked.chmod(0o755)
