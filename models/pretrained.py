"""Trained weights shipped inside the package, loaded offline and checked by sha256.

``create_model("cbcn_lenet", weights="mnist")`` builds the model and loads the weights packaged
for it; ``weights`` is a registered name when it is not the path of a file. Each entry of the
registry (``weights/registry.json``, written by ``benchmarks/package_weights.py`` from a
finished ledger cell) records where its weights came from: the training command, recipe, seed
and epochs, and the test error the packaged file scores. An entry is named by the model it
builds (``model.name``: ``cbcn_lenet``, ``xnor_lenet``, ``cbcn_lenet_float`` for the
full-precision twin) and its weights name, ``NAME:WEIGHTS`` on the command line.

Example:
    >>> from cbcn_tf.models import list_pretrained
    >>> all(set(row) >= {"name", "weights", "test_error", "command"} for row in list_pretrained())
    True
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from importlib import resources

from cbcn_tf.errors import ConfigError, ModelFileError

REGISTRY_FILE = "registry.json"


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """One packaged weights file and the ledger cell it came from."""

    name: str  # the model's name (model.name), e.g. cbcn_lenet_float
    weights: str  # e.g. mnist, mnist_rot
    function: str  # the registered model function, e.g. cbcn_lenet
    kwargs: dict  # keyword arguments of `function` besides `weights`
    file: str  # file name inside the package's weights/ folder
    sha256: str
    dataset: str
    rotate: bool  # scored (and trained) on the rotated variant of the split
    split: str
    test_error: float  # in %, of the packaged file on `split` (rotated if `rotate`)
    errors: int
    images: int
    recipe: str
    seed: int
    epochs: int
    command: str

    @property
    def spec(self) -> str:
        return f"{self.name}:{self.weights}"

    def path(self) -> str:
        """The packaged file, after checking its sha256 against the registry."""
        path = os.fspath(_folder().joinpath(self.file))
        if not os.path.isfile(path):
            raise ModelFileError(f"The packaged weights {self.file} of {self.spec} are missing "
                                 "from this installation; reinstall cbcn-tf.")
        digest = sha256(path)
        if digest != self.sha256:
            raise ModelFileError(
                f"The packaged weights {path} of {self.spec} have sha256 {digest[:12]}..., not "
                f"the registry's {self.sha256[:12]}... (damaged or replaced); reinstall cbcn-tf.")
        return path


def _folder():
    return resources.files("cbcn_tf.models").joinpath("weights")


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _entries() -> list:
    registry = _folder().joinpath(REGISTRY_FILE)
    if not registry.is_file():
        return []
    fields = {f.name for f in dataclasses.fields(Pretrained)}
    return [Pretrained(**{k: v for k, v in row.items() if k in fields})
            for row in json.loads(registry.read_text(encoding="utf-8"))]


def list_pretrained() -> list:
    """The registry as rows (dicts): name, weights, spec, command, seed, test error, ..."""
    return [dict(dataclasses.asdict(entry), spec=entry.spec) for entry in _entries()]


def is_weights_name(weights) -> bool:
    """True when ``weights`` names packaged weights rather than a file (no folder, no suffix,
    no file or TF checkpoint of that name)."""
    return (isinstance(weights, str) and bool(weights) and os.sep not in weights
            and "." not in weights and not os.path.exists(weights)
            and not os.path.exists(weights + ".index"))


def find(name: str, weights: str) -> Pretrained:
    """The entry of model ``name`` (``model.name``) and ``weights``; a one-line `ConfigError`
    listing what exists otherwise."""
    entries = _entries()
    for entry in entries:
        if entry.name == name and entry.weights == weights:
            return entry
    known = ", ".join(entry.spec for entry in entries) or "none in this installation"
    raise ConfigError(f"No packaged weights {weights!r} for the model {name!r}. Packaged: "
                      f"{known} (cbcn list-models); or pass the path of a weights file.")


def parse_spec(spec) -> Pretrained | None:
    """The entry named by ``NAME:WEIGHTS`` (e.g. ``cbcn_lenet:mnist``), or None when ``spec``
    has not that form or is an existing path; an unknown pair is a one-line `ConfigError`."""
    spec = os.fspath(spec)
    if os.path.exists(spec) or spec.count(":") != 1:
        return None
    name, weights = spec.split(":")
    if not name or not is_weights_name(weights) or os.sep in name:
        return None
    return find(name, weights)


def build(entry: Pretrained):
    """The model of ``entry`` with its packaged weights."""
    from cbcn_tf.models.registry import create_model

    return create_model(entry.function, **entry.kwargs, weights=entry.weights)
