"""Rebuild a Keras model with some layers replaced, keeping every other weight.

One mechanism serves ``make_invariant``, ``cbcnify`` and the LCE materialisation: the model's
config is rewritten (each replaced layer's entry becomes the entries of its replacements, wired
in a chain), Keras rebuilds the model from it (so shared layers, call arguments, several
inputs / outputs and nested models keep working), and the weights are carried over by layer
name. The helpers that walk and classify layers live here too.

Example:
    >>> import cbcn_tf, tensorflow as tf
    >>> x = tf.keras.Input((4,))
    >>> model = tf.keras.Model(x, tf.keras.layers.Dense(2, name="dense")(x))
    >>> wider = rewrite(model, lambda layer, calls: (
    ...     [tf.keras.layers.Dense(3, name="dense")] if layer.name == "dense" else None))
    >>> wider.output_shape
    (None, 3)
"""
from __future__ import annotations

import tensorflow as tf

from cbcn_tf.errors import ConfigError


def is_binary_layer(layer) -> bool:
    """Input and kernel both quantised to 1 bit (what larq.models.summary calls binary)."""
    return all(getattr(getattr(layer, attr, None), "precision", None) == 1
               for attr in ("input_quantizer", "kernel_quantizer"))


def iter_layers(model):
    """Every layer of ``model``, descending into nested models."""
    for layer in model.layers:
        if isinstance(layer, tf.keras.Model):
            yield from iter_layers(layer)
        else:
            yield layer


def is_graph_model(model) -> bool:
    """A built functional or Sequential model (one whose config lists its layers)."""
    return bool(model.built) and (isinstance(model, tf.keras.Sequential)
                                  or getattr(model, "_is_graph_network", False))


def require_graph_model(model, action: str, error=ConfigError, nested: bool = False) -> None:
    """Raise one line (``error``, a CbcnError) unless ``model`` is a built functional or
    Sequential model; with ``nested``, every model inside it must be one too.

    Example:
        >>> lazy = tf.keras.Sequential([tf.keras.layers.Dense(2)], name="lazy")
        >>> require_graph_model(lazy, "cbcnify")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        cbcn_tf.errors.ConfigError: cbcnify: model 'lazy' is not built; it needs a built ...
    """
    models = [model] + ([m for m in model.submodules if isinstance(m, tf.keras.Model)]
                        if nested else [])
    for each in models:
        if not is_graph_model(each):
            what = "not built" if not each.built else "a subclassed Keras model"
            raise error(
                f"{action}: model {each.name!r} is {what}; it needs a built functional or "
                "Sequential model (rebuilt layer by layer from its config). Build it with "
                "tf.keras.Model(inputs, outputs) or tf.keras.Sequential([tf.keras.Input(shape), "
                "...]) and copy the weights.")


def copy_matching(old, new_layers) -> None:
    """The default ``carry``: ``old``'s weights into the first replacement when their shapes
    match; otherwise the replacement keeps its initialisation."""
    weights, target = old.get_weights(), new_layers[0].get_weights()
    if [w.shape for w in weights] == [w.shape for w in target]:
        new_layers[0].set_weights(weights)


def rewrite(model: tf.keras.Model, replace, carry=copy_matching,
            nested: bool = False) -> tf.keras.Model:
    """A copy of ``model`` (built, functional or Sequential) with layers replaced.

    Args:
        model: the model; it is not changed.
        replace: ``replace(layer, calls)`` for every layer except inputs, in the config's
            (topological) order; ``calls`` lists, per call of the layer in ``model``, the names
            of the layers feeding it (Sequential: the previous layer). It returns None to keep
            the layer, or a new layer or a list of new (unbuilt) layers applied in turn; the
            last one's output takes the layer's place. A new layer named like another layer
            of the model gets ``_`` appended.
        carry: ``carry(old_layer, new_layers)`` moves weights into a replacement (the rebuilt
            model's layers for ``replace``'s list, in order); default :func:`copy_matching`.
            Kept layers always keep their weights.
        nested: also rewrite, with the same functions, the functional / Sequential models
            nested in ``model`` that ``replace`` keeps.

    Returns:
        A new, uncompiled model of the same kind, named like ``model``.
    """
    require_graph_model(model, "rewrite")
    config, plan, classes = _rewrite_config(model, model.get_config(), replace, nested)
    classes.update({type(layer).__name__: type(layer) for layer in iter_layers(model)})
    base = tf.keras.Sequential if isinstance(model, tf.keras.Sequential) else tf.keras.Model
    with tf.keras.utils.custom_object_scope(classes):
        new_model = base.from_config(config)
    _carry(plan, new_model, carry)
    return new_model


def _rewrite_config(model, config: dict, replace, nested: bool):
    """(new config, weight plan, classes of the new layers) for one (nested) model."""
    layers = {layer.name: layer for layer in model.layers}
    sequential = isinstance(model, tf.keras.Sequential)
    names = {entry["config"]["name"] for entry in config["layers"]}
    output_of, entries, plan, classes = {}, [], [], {}
    previous = None
    for entry in config["layers"]:
        name = entry["config"]["name"]
        layer = layers.get(name)
        calls = ([[previous]] if previous else [[]]) if sequential else [
            _names(node) for node in entry["inbound_nodes"]]
        previous = name
        if layer is None or isinstance(layer, tf.keras.layers.InputLayer):
            entries.append((entry, True))
            continue
        new = replace(layer, calls)
        if new is None and nested and isinstance(layer, tf.keras.Model) and is_graph_model(
                layer):
            sub_config, sub_plan, sub_classes = _rewrite_config(
                layer, entry["config"], replace, nested)
            entries.append(({**entry, "config": sub_config}, True))
            plan.append((layer, "nested", sub_plan))
            classes.update(sub_classes)
            continue
        if new is None:
            entries.append((entry, True))
            plan.append((layer, "keep", None))
            continue
        chain = []
        for new_layer in new if isinstance(new, (list, tuple)) else [new]:
            classes[type(new_layer).__name__] = type(new_layer)
            new_name = new_layer.name
            while new_name != name and new_name in names:
                new_name += "_"
            names.add(new_name)
            new_entry = tf.keras.layers.serialize(new_layer)
            new_entry["config"] = {**new_entry["config"], "name": new_name}
            if not sequential:  # node i of each chain layer reads node i of the one before
                new_entry["name"] = new_name
                new_entry["inbound_nodes"] = [[[chain[-1], i, 0, {}]] for i in range(
                    len(entry["inbound_nodes"]))] if chain else entry["inbound_nodes"]
            entries.append((new_entry, not chain))
            chain.append(new_name)
        output_of[name] = chain[-1]
        plan.append((layer, "replace", chain))
    if sequential:
        return {**config, "layers": [entry for entry, _ in entries]}, plan, classes
    # What read a replaced layer now reads the last layer of its chain.
    entries = [{**entry, "inbound_nodes": _renamed(entry["inbound_nodes"], output_of)}
               if outer else entry for entry, outer in entries]
    return ({**config, "layers": entries,
             "output_layers": _renamed(config["output_layers"], output_of)}, plan, classes)


def _carry(plan, new_model, carry) -> None:
    for layer, how, data in plan:
        if how == "keep":
            new_model.get_layer(layer.name).set_weights(layer.get_weights())
        elif how == "replace":
            carry(layer, [new_model.get_layer(name) for name in data])
        else:
            _carry(data, new_model.get_layer(layer.name), carry)


def _is_reference(data) -> bool:
    """``[layer name, node index, tensor index, (call kwargs)]`` in a serialised node."""
    return (isinstance(data, list) and len(data) >= 3 and isinstance(data[0], str)
            and isinstance(data[1], int) and isinstance(data[2], int))


def _names(node) -> list:
    """Names of the layers a serialised node reads, in order."""
    if _is_reference(node):
        return [node[0]]
    if isinstance(node, (list, tuple)):
        return [name for item in node for name in _names(item)]
    if isinstance(node, dict):
        return [name for item in node.values() for name in _names(item)]
    return []


def _renamed(data, output_of: dict):
    if _is_reference(data):
        return [output_of.get(data[0], data[0]), *data[1:3],
                *(_renamed(item, output_of) for item in data[3:])]
    if isinstance(data, (list, tuple)):
        return [_renamed(item, output_of) for item in data]
    if isinstance(data, dict):
        return {key: _renamed(value, output_of) for key, value in data.items()}
    return data
