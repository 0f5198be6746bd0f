"""The user errors (`cbcn_tf.errors`): one family under `CbcnError`, exported by the modules
that raise them under the same classes."""
import cbcn_tf  # noqa: F401  (Keras 2 before tensorflow)

from cbcn_tf import config as config_lib
from cbcn_tf import training
from cbcn_tf.errors import (CbcnError, ConfigError, DataError, DivergenceError, ExportError,
                            ModelFileError, OutputError, TrainingDiverged, UntrustedModelError)


def test_error_family_and_aliases():
    for kind in (ConfigError, DataError, ExportError, DivergenceError, ModelFileError,
                 OutputError, UntrustedModelError):
        assert issubclass(kind, CbcnError)
    assert training.TrainingDiverged is TrainingDiverged is DivergenceError
    assert config_lib.ConfigError is ConfigError
    assert issubclass(ConfigError, ValueError) and issubclass(OutputError, OSError)
