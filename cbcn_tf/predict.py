"""Classify image files with a trained model: the top-k classes, names and probabilities.

The model is a run folder, a Keras ``.h5`` file (refused when it would run code, unless
``trusted``: see `cbcn_tf.model_files`), an LCE / TFLite ``.tflite`` file (run with LCE's
interpreter) or packaged weights ``NAME:WEIGHTS`` (``cbcn_lenet:mnist``). Each image is
prepared as the model's training prepared its dataset's images, by the same code
(`cbcn_tf.data.augment.make_prepare`, evaluation mode):

* decoded as ``tf.image.decode_image`` decodes a training image. Image folders and ImageNet
  decode their files with the dataset's channel count, so a grayscale photo becomes RGB for an
  RGB folder, as in training; MNIST, CIFAR and the digits were never files with other
  channels, so an image whose channels differ from the model's is refused, naming both;
* at the dataset's size: MNIST, CIFAR and image folders take images of their size only;
  ImageNet resizes the shorter side and crops the centre, as its evaluation does; the digits
  take 16x16 images, or 8x8 scans resized as the dataset resizes scikit-learn's;
* scaled to [0, 1] and normalised with the dataset's mean and std.

The dataset comes from ``dataset`` (``--dataset``), else the ``config.yaml`` of the run folder
(or of the folder holding the model file), else the packaged weights' record. Class names:
MNIST and digits ``'0'`` .. ``'9'``, the CIFAR-10 names, an image folder's class folders,
TFDS's label names for the other datasets. Probabilities are the model's outputs when it ends
in a softmax (the zoo models do), else the softmax of its outputs.

Example (an untrained model, so only the form of the answer is shown; a run folder such as
``"runs/digits"`` or packaged weights such as ``"cbcn_lenet:mnist"`` in its place give a trained
model's classes):
    >>> import os, tempfile
    >>> import numpy as np, tensorflow as tf
    >>> from sklearn.datasets import load_digits
    >>> from cbcn_tf.models import create_model
    >>> from cbcn_tf.predict import predict
    >>> scan = load_digits().images[7]  # an 8x8 scan of a 7, ink 0..16
    >>> path = os.path.join(tempfile.mkdtemp(), "seven.png")
    >>> tf.io.write_file(path, tf.io.encode_png(np.uint8(scan * 255 / 16)[..., None]))
    >>> model = create_model("cbcn_lenet", input_shape=(16, 16, 1), orientations=2)
    >>> [result] = predict(model, [path], top_k=3, dataset="digits")
    >>> os.path.basename(result.path), len(result.top)
    ('seven.png', 3)
    >>> result.top[0].probability >= result.top[1].probability >= result.top[2].probability
    True
"""
from __future__ import annotations

import dataclasses
import os
import re

import numpy as np
import tensorflow as tf

from cbcn_tf import data as data_lib
from cbcn_tf.data import image_folders
from cbcn_tf.data.augment import make_prepare
from cbcn_tf.errors import ConfigError, DataError, MissingFileError, ModelFileError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
# Datasets whose training decodes image files with the dataset's channel count (TFDS's
# ImageFolder and ImageNet builders); the others were stored as arrays of one channel count.
_DECODE_TO_CHANNELS = ("imagenet2012",)
_MAGIC = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG"}


@dataclasses.dataclass(frozen=True)
class TopClass:
    label: int
    name: str
    probability: float


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The ``top`` classes of the image at ``path``, most probable first."""

    path: str
    top: tuple

    def as_dict(self) -> dict:
        return {"path": self.path, "top": [dataclasses.asdict(t) for t in self.top]}

    def line(self) -> str:
        """``PATH  NAME 98.12%  NAME 1.00% ...`` (the label index too when it is not the name)."""
        parts = [(t.name if t.name == str(t.label) else f"{t.name} ({t.label})")
                 + f" {100 * t.probability:.2f}%" for t in self.top]
        return "  ".join([self.path, *parts])


@dataclasses.dataclass
class Predictor:
    """A loaded model and the dataset whose preparation and class names it uses."""

    name: str
    dataset: str
    data_dir: str | None
    info: data_lib.DatasetInfo
    class_names: list
    run: object  # prepared images (N, H, W, C) float32 -> model outputs (N, classes)
    gives_probabilities: bool

    def probabilities(self, images) -> np.ndarray:
        """Class probabilities (N, classes) of prepared images (`read_images`), float64."""
        outputs = np.asarray(self.run(np.ascontiguousarray(images, np.float32)), np.float64)
        if self.gives_probabilities:
            return outputs
        shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)


def predict(model, paths, *, top_k: int = 5, dataset: str | None = None,
            data_dir: str | None = None, trusted: bool = False) -> list:
    """`Prediction` (top ``top_k`` classes) of each image of ``paths`` (files or folders; a
    folder stands for its .png / .jpg / .jpeg files, sorted), in order.

    ``model``: a run folder, ``.h5``, ``.tflite``, ``NAME:WEIGHTS``, a Keras model (with
    ``dataset``) or a `Predictor`. Every image is read and checked before the model runs, so a
    bad image is one `CbcnError` naming it and nothing is predicted.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConfigError(f"top_k must be a positive integer, got {top_k!r}; e.g. --top-k 5.")
    files = image_files(paths)
    predictor = model if isinstance(model, Predictor) else load_predictor(
        model, dataset=dataset, data_dir=data_dir, trusted=trusted)
    images = read_images(files, predictor)
    probabilities = predictor.probabilities(images)
    k = min(top_k, probabilities.shape[1])
    results = []
    for path, row in zip(files, probabilities):
        order = np.argsort(-row, kind="stable")[:k]
        results.append(Prediction(path, tuple(
            TopClass(int(i), predictor.class_names[i], float(row[i])) for i in order)))
    return results


def image_files(paths) -> list:
    """The image files of ``paths``: each file as given, each folder's image files sorted."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = []
    for path in map(os.fspath, paths):
        if os.path.isdir(path):
            found = sorted(os.path.join(path, name) for name in os.listdir(path)
                           if name.lower().endswith(image_folders.IMAGE_EXTENSIONS)
                           and os.path.isfile(os.path.join(path, name)))
            if not found:
                kinds = " / ".join(image_folders.IMAGE_EXTENSIONS)
                raise DataError(f"Folder {path} holds no {kinds} images; pass image files or a "
                                "folder of them.")
            files += found
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise MissingFileError(f"No image at {path}: no such file or folder; check the "
                                   "path.")
    if not files:
        raise DataError("No images given; pass PNG / JPEG files or folders.")
    return files


# --- models ----------------------------------------------------------------------------------


def load_predictor(model, *, dataset: str | None = None, data_dir: str | None = None,
                   trusted: bool = False) -> Predictor:
    """The `Predictor` of ``model`` (see `predict`), checked against its dataset's images and
    classes."""
    if isinstance(model, tf.keras.Model):
        if not dataset:
            raise ConfigError(f"Pass the dataset {model.name} was trained on (dataset=NAME) to "
                              "prepare images as its training did.")
        name, (run, probs, input_shape, classes) = model.name, _keras_parts(model)
    else:
        name = os.fspath(model)
        if _is_tflite(name):
            run, probs, input_shape, classes = _tflite_parts(_read_flatbuffer(name), name)
        else:
            from cbcn_tf import training

            run, probs, input_shape, classes = _keras_parts(
                training.load_model(name, trusted=trusted))
        dataset, data_dir = _data_source(name, dataset, data_dir)
    info = data_lib.dataset_info(dataset, data_dir=data_dir)
    if tuple(input_shape) != tuple(info.input_shape) or classes != info.num_classes:
        raise DataError(
            f"{name} takes {'x'.join(map(str, input_shape))} images into {classes} classes but "
            f"{dataset} has {'x'.join(map(str, info.input_shape))} images in {info.num_classes} "
            "classes; pass the --dataset it was trained on.")
    return Predictor(name, dataset, data_dir, info, class_names(dataset, data_dir), run, probs)


def _data_source(spec, dataset, data_dir):
    """(dataset, data_dir): as given, else the run's config.yaml (the folder, or the folder
    holding the model file), else the packaged weights' record."""
    from cbcn_tf.config import CONFIG_FILE
    from cbcn_tf.training import run_eval_options

    where = os.path.dirname(os.path.abspath(spec)) if os.path.isfile(spec) else spec
    if not dataset and os.path.isdir(where) and not os.path.isfile(
            os.path.join(where, CONFIG_FILE)):
        raise ConfigError(
            f"No dataset known for {spec} (no {CONFIG_FILE} in its run folder): pass --dataset "
            "NAME (the one it was trained on: mnist, digits, cifar10, ..., or image_folder "
            "with --data-dir PATH) so images are prepared as in its training.")
    options = run_eval_options(where, dataset=dataset, data_dir=data_dir)
    return options["dataset"], options["data_dir"]


def _keras_parts(model):
    """(run, gives probabilities, input shape, classes) of a Keras model."""
    layer = model.get_layer(model.output_names[0])
    softmax = (isinstance(layer, tf.keras.layers.Softmax)
               or getattr(getattr(layer, "activation", None), "__name__", None) == "softmax")
    return (lambda images: model.predict(images, batch_size=256, verbose=0), softmax,
            tuple(model.input_shape[1:]), model.output_shape[-1])


def _is_tflite(path) -> bool:
    if path.endswith(".tflite"):
        return True
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as handle:
        return handle.read(8)[4:8] == b"TFL3"


def _read_flatbuffer(path) -> bytes:
    """The bytes of a .tflite file, checked with TFLite's verifier before LCE runs it."""
    from cbcn_tf.converters.benchmark import read_tflite

    return read_tflite(path, purpose="run", error=ModelFileError)


def _tflite_parts(flatbuffer, path):
    """(run, gives probabilities, input shape, classes) of a flatbuffer run by LCE."""
    import larq_compute_engine as lce

    interpreter = lce.testing.Interpreter(flatbuffer, num_threads=1)
    if len(interpreter.input_shapes) != 1 or len(interpreter.output_shapes) != 1:
        raise ModelFileError(f"{path} has {len(interpreter.input_shapes)} inputs and "
                             f"{len(interpreter.output_shapes)} outputs; a classifier has one "
                             "image input and one output.")
    input_shape = tuple(int(d) for d in interpreter.input_shapes[0][1:])
    classes = int(interpreter.output_shapes[0][-1])
    return interpreter.predict, _ends_in_softmax(flatbuffer), input_shape, classes


def _ends_in_softmax(flatbuffer) -> bool:
    """Whether the flatbuffer's output is written by a SOFTMAX op."""
    from larq_compute_engine.mlir.python import tflite_schema

    model = tflite_schema.Model.GetRootAsModel(flatbuffer, 0)
    graph = model.Subgraphs(0)
    output = graph.Outputs(0)
    for o in range(graph.OperatorsLength()):
        op = graph.Operators(o)
        if output in op.OutputsAsNumpy():
            code = model.OperatorCodes(op.OpcodeIndex())
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            return builtin == tflite_schema.BuiltinOperator.SOFTMAX
    return False


# --- datasets and images ---------------------------------------------------------------------


def class_names(dataset: str, data_dir: str | None = None) -> list:
    """The class names of ``dataset``, by label (see the module docstring)."""
    info = data_lib.dataset_info(dataset, data_dir=data_dir)
    root = image_folders.folder_root(dataset, data_dir)
    if root is not None:
        return list(image_folders.layout(root)[1])
    if info.name in ("mnist", "digits"):
        return [str(label) for label in range(10)]
    if info.name == "cifar10":
        return list(CIFAR10_CLASSES)
    import tensorflow_datasets as tfds  # label names known to TFDS (ImageNet's WordNet ids)

    names = tfds.builder(info.tfds_name, data_dir=data_dir).info.features["label"].names
    return list(names) if len(names) == info.num_classes else [
        str(label) for label in range(info.num_classes)]


def read_images(files, predictor: Predictor) -> np.ndarray:
    """The image files prepared for ``predictor``'s model: (N, H, W, C) float32."""
    info = predictor.info
    images = [_decode(path, info, predictor.name) for path in files]
    prepare = make_prepare(info, training=False, rotate=False, seed=0)
    if info.augmentation == "imagenet":  # sizes differ until the evaluation crop
        return np.stack([prepare(0, (image, 0))[0].numpy() for image in images])
    source = tf.data.Dataset.from_tensor_slices((tf.stack(images),
                                                 tf.zeros(len(images), tf.int64)))
    prepared = source.enumerate().map(prepare).batch(1024)
    return np.concatenate([batch.numpy() for batch, _ in prepared])


def _decode(path, info, model_name) -> tf.Tensor:
    """One image file as its dataset's source image: float32 in [0, 1] at the dataset's size
    (ImageNet: any size)."""
    with open(path, "rb") as handle:
        raw = handle.read()
    kind = next((kind for magic, kind in _MAGIC.items() if raw.startswith(magic)), None)
    if kind is None:
        raise DataError(f"{path} is not a PNG or JPEG image; pass .png / .jpg files (other "
                        "formats: convert them first).")
    channels = info.input_shape[2]
    converts = info.name in _DECODE_TO_CHANNELS or info.root is not None
    try:
        image = tf.io.decode_image(raw, channels=channels if converts else 0,
                                   expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as exc:
        reason = re.sub(r"\{\{.*?\}\}|\[Op:\w+\]", "", str(getattr(exc, "message", exc)))
        reason = " ".join(reason.split())[:200]
        raise DataError(f"Unreadable image {path} ({kind}: {reason}); re-export it.") from None
    height, width, found = image.shape
    if found != channels:
        kinds = {1: "grayscale", 2: "grayscale + alpha", 3: "RGB", 4: "RGBA"}
        raise DataError(
            f"{path} has {found} channel{'s' * (found != 1)} ({kinds.get(found, '?')}) but "
            f"the model {model_name} takes {channels}-channel ({kinds.get(channels, '?')}) images, like "
            f"its training images ({info.name}); convert it to {kinds.get(channels, channels)} "
            "first.")
    image = tf.image.convert_image_dtype(image, tf.float32)  # what `make_prepare` does first
    want = tuple(info.input_shape[:2])
    if info.name == "digits" and (height, width) == data_lib.DIGITS_SCAN_SIZE:
        return tf.constant(data_lib.digits_from_scans(image[None])[0])
    if info.augmentation != "imagenet" and (height, width) != want:
        also = (f" (or {'x'.join(map(str, data_lib.DIGITS_SCAN_SIZE))}, a scan)"
                if info.name == "digits" else "")
        raise DataError(
            f"{path} is {height}x{width} but the model {model_name} takes {want[0]}x{want[1]} "
            "images"
            f"{also}, the size of its training images ({info.name}); resize it first.")
    return image
