"""Repository-root pytest setup: the docstring examples of models/ and converters/.

setup.py installs models/ as ``cbcn_tf.models`` and converters/ as ``cbcn_tf.converters``.
``--doctest-modules`` imports each file by its path, under the top-level name pytest derives
from it (``models.blocks``); a second copy of a module would register its models and Keras
objects twice (``register_model`` refuses: "A model named 'cbcn_lenet' is already
registered"). So before pytest imports the first file of such a directory, its top-level
names are pointed at the installed modules (the same files, imported once).
"""
import importlib
import pkgutil
import sys
import tempfile
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parent
_INSTALLED_AS = {"models": "cbcn_tf.models", "converters": "cbcn_tf.converters"}


def _alias(top: str, installed: str) -> None:
    package = importlib.import_module(installed)
    sys.modules[top] = package
    for info in pkgutil.iter_modules(package.__path__):
        sys.modules[f"{top}.{info.name}"] = importlib.import_module(f"{installed}.{info.name}")


def pytest_collect_file(file_path, parent):
    path = Path(file_path).resolve()
    if path.suffix != ".py" or not path.is_relative_to(_ROOT):
        return None
    top = path.relative_to(_ROOT).parts[0]
    if top in _INSTALLED_AS and top not in sys.modules:
        _alias(top, _INSTALLED_AS[top])
    return None


@pytest.fixture(autouse=True)
def _examples_in_tmp_path(request, monkeypatch):
    """A docstring example's ``tempfile.mkdtemp()`` lands in its pytest ``tmp_path``, which
    pytest removes, instead of accumulating in the system's temp folder."""
    if type(request.node).__name__ == "DoctestItem":
        monkeypatch.setattr(tempfile, "tempdir", str(request.getfixturevalue("tmp_path")))


def pytest_collection_modifyitems(items):
    """The examples of converters/ convert to .tflite or run LCE: marked ``lce`` (pytest.ini)."""
    converters = _ROOT / "converters"
    for item in items:
        if Path(item.path).resolve().is_relative_to(converters):
            item.add_marker(pytest.mark.lce)
