"""YAML reading that refuses a mapping holding one key twice.

Plain PyYAML keeps the last of two equal keys without a word, so a recipe that sets
``epochs`` twice would train with whichever came last. `load_yaml` is ``yaml.safe_load`` with
that check; recipes, run configs and ``--set`` values are read with it.
"""
from __future__ import annotations

import yaml

_MERGE_TAG = "tag:yaml.org,2002:merge"


class DuplicateKeyError(yaml.YAMLError):
    """A YAML mapping that holds one key twice; ``key`` and the two 1-based ``lines``."""

    def __init__(self, key, first_line: int, line: int):
        super().__init__(f"key {key!r} given twice (lines {first_line} and {line})")
        self.key, self.lines = key, (first_line, line)

    def describe(self) -> str:
        return f"sets {self.key!r} twice, on lines {self.lines[0]} and {self.lines[1]}"


class _UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that raises `DuplicateKeyError` for a key repeated in one mapping."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            lines = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue  # `<<: *base`: the keys after it may override the merged ones
                key = self.construct_object(key_node, deep=deep)
                try:
                    first = lines.get(key)
                except TypeError:
                    continue  # an unhashable key: SafeLoader's own error names it
                line = key_node.start_mark.line + 1
                if first is not None:
                    raise DuplicateKeyError(key, first, line)
                lines[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str):
    """``yaml.safe_load(text)``, refusing a mapping that holds one key twice.

    Example:
        >>> load_yaml("epochs: 2\\nlr: 0.1\\n")
        {'epochs': 2, 'lr': 0.1}
        >>> load_yaml("epochs: 2\\nepochs: 3\\n")
        Traceback (most recent call last):
        ...
        cbcn_tf.strict_yaml.DuplicateKeyError: key 'epochs' given twice (lines 1 and 2)
    """
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506  (a SafeLoader subclass)
