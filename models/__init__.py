"""CBCN model zoo (imported as ``cbcn_tf.models``): one registry, shared blocks, ``cbcnify``.

Models (keyword-only functions, also reachable by name through ``create_model``):
``cbcn_resnet18``, ``cbcn_resnet18_imagenet``, ``cbcn_lenet``, ``cbcn_wrn22``, ``cbcn_wrn40``
and the K = 1 baselines ``xnor_lenet``, ``xnor_resnet18`` / ``xnor_resnet18_doubled``.
``binary=False`` gives any model's full-precision twin. Metadata kept with each registered model:
``model_min_input_size(name)`` (smallest input height / width). The method: docs/METHOD.md §6.

Example:
    >>> import cbcn_tf
    >>> from cbcn_tf.models import create_model, list_models
    >>> model = create_model("cbcn_resnet18", orientations=2, kernel_stage=(8, 8, 16, 32))
    >>> model.output_shape
    (None, 10)
"""
from cbcn_tf.models import blocks, lenet, resnet, wrn  # noqa: F401  (modules register models)
from cbcn_tf.models.cbcnify import cbcnify
from cbcn_tf.models.lenet import cbcn_lenet, xnor_lenet
from cbcn_tf.models.pretrained import list_pretrained
from cbcn_tf.models.registry import (create_model, list_models, load_weights,
                                     model_min_input_size, register_model)
from cbcn_tf.models.resnet import (cbcn_resnet18, cbcn_resnet18_imagenet, xnor_resnet18,
                                   xnor_resnet18_doubled)
from cbcn_tf.models.wrn import cbcn_wrn22, cbcn_wrn40

__all__ = [
    "cbcn_lenet", "cbcn_resnet18", "cbcn_resnet18_imagenet", "cbcn_wrn22", "cbcn_wrn40",
    "cbcnify", "create_model", "list_models", "list_pretrained", "load_weights",
    "model_min_input_size", "register_model", "xnor_lenet", "xnor_resnet18",
    "xnor_resnet18_doubled",
]
