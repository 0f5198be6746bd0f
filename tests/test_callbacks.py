"""The NaN guard (`cbcn_tf.training.callbacks.NaNGuard`): a loss that becomes NaN or infinite
stops training with advice on what to change, and `cbcn train` prints it as its one error
line."""
import cbcn_tf  # noqa: F401  (Keras 2 before tensorflow)
import pytest
import tensorflow as tf

from cbcn_tf import data as data_lib
from cbcn_tf import training


def test_nan_in_the_data_stops_training_with_advice(tmp_path, monkeypatch, tiny_config):
    real = data_lib.load_dataset

    def with_nan(*args, **kwargs):
        ds = real(*args, **kwargs)
        if not kwargs.get("training"):
            return ds
        return ds.map(lambda x, y: (x * float("nan"), y))

    monkeypatch.setattr(data_lib, "load_dataset", with_nan)
    run = tmp_path / "run"
    with pytest.raises(training.TrainingDiverged) as info:
        training.train(tiny_config("epochs=2"), str(run), verbose=0)
    message = str(info.value)
    assert "loss became nan at epoch 1, step 1" in message
    assert "lower learning rate" in message and "e.g. --set lr=0.0005" in message
    assert "check the data for NaN/Inf values and its normalisation" in message
    assert not (run / "model.h5").exists()  # a diverged model is not saved
    assert issubclass(training.NaNGuard, tf.keras.callbacks.TerminateOnNaN)


def test_huge_learning_rate_fails_with_one_error_line(tmp_path, capsys, train_cli):
    """The CLI prints the guard's advice as its error line (exit code 2)."""
    code = train_cli(tmp_path / "run", "epochs=3", "optimizer=sgd", "lr=1e38",
                     "model_kwargs.binary=false", "model_kwargs.dropout=0")
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("cbcn: error: Training diverged: the loss became") and \
        "Try a lower learning rate (lr is 1e+38; e.g. --set lr=1e+37)" in err
    assert not (tmp_path / "run" / "model.h5").exists()
