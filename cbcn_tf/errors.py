"""The user-error family: everything the user can fix raises a `CbcnError` subclass.

The ``cbcn`` command prints a `CbcnError` as one ``cbcn: error: ...`` line and exits with code
2; any other exception is a bug (in cbcn-tf, TensorFlow, ...) and keeps its traceback. Each
message names the file or setting at fault and what to do about it.

The subclasses also derive from the built-in exception older code caught (``ValueError``,
``OSError``, ``FileNotFoundError``), so ``except ValueError`` keeps working.

Example:
    >>> from cbcn_tf.errors import CbcnError, DataError
    >>> issubclass(DataError, CbcnError) and issubclass(DataError, ValueError)
    True
"""
from __future__ import annotations


class CbcnError(Exception):
    """A problem the user can fix (bad input, file, setting); the message says how."""


class ConfigError(CbcnError, ValueError):
    """A recipe, override or model setting that does not work."""


class DataError(CbcnError, ValueError):
    """A dataset, image folder or data file that cannot be read or used."""


class ModelFileError(CbcnError, ValueError):
    """A saved model that cannot be loaded (truncated, not a model, untrusted code)."""


class UntrustedModelError(ModelFileError):
    """A saved model whose config would run code or classes from outside Keras, larq and
    cbcn_tf; load it with ``trusted=True`` / ``--trust-model`` only if you trust its source."""


class ExportError(CbcnError, ValueError):
    """A model or destination that cannot be exported or benchmarked."""


class OutputError(CbcnError, OSError):
    """A file or folder that cannot be written (full or read-only disk, missing folder)."""


class MissingFileError(CbcnError, FileNotFoundError):
    """An input file or folder that does not exist."""


class DivergenceError(CbcnError, ValueError):
    """The loss became NaN or infinite; the message says what to try."""


# The same class under the name `cbcn_tf.training` raises and exports it by.
TrainingDiverged = DivergenceError

__all__ = ["CbcnError", "ConfigError", "DataError", "DivergenceError", "ExportError",
           "MissingFileError", "ModelFileError", "OutputError", "TrainingDiverged",
           "UntrustedModelError"]
