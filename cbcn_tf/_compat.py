"""Keras 2 bootstrap: larq and LCE only work with Keras 2 (the tf-keras package).

TensorFlow >= 2.16 resolves ``tf.keras`` lazily from ``TF_USE_LEGACY_KERAS`` the first time it
is touched and keeps that choice for the life of the process, so this must run before anything
touches ``tf.keras``. (``import tensorflow`` itself loads parts of Keras 3; that is harmless as
long as ``tf.keras`` still resolves to tf-keras.)
"""
import os
import sys

_FIX = (
    "cbcn_tf needs Keras 2 (the tf-keras package) because larq and the Larq Compute Engine "
    "converter only work with Keras 2. Fix: `import cbcn_tf` before anything uses tf.keras, or "
    "start Python with TF_USE_LEGACY_KERAS=1 in the environment, and `pip install tf-keras`."
)


def ensure_keras2() -> None:
    """Select tf-keras as ``tf.keras`` or raise ImportError naming the fix."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    if os.environ["TF_USE_LEGACY_KERAS"].lower() not in ("1", "true", "yes"):
        raise ImportError(
            f"TF_USE_LEGACY_KERAS={os.environ['TF_USE_LEGACY_KERAS']!r} selects Keras 3. " + _FIX
        )
    try:
        import tf_keras  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("The tf-keras package is missing. " + _FIX) from exc
    import tensorflow as tf

    # `from tensorflow.keras.x import y` searches tensorflow.__path__, which TF fixed at its own
    # import from the environment; if tensorflow came first, point it at tf-keras as well.
    import tf_keras.api._v2.keras as _tf_keras_api

    tf_keras_dir = os.path.dirname(os.path.dirname(_tf_keras_api.__file__))
    if tf.__path__[0] != tf_keras_dir:
        tf.__path__.insert(0, tf_keras_dir)
    imported = sys.modules.get("tensorflow.keras")  # an earlier `import tensorflow.keras...`
    for where in (tf.keras.layers.Layer.__module__, getattr(imported, "__file__", "tf_keras")):
        if "tf_keras" not in where:
            raise ImportError(
                f"Keras 3 is already loaded as tf.keras in this process ({where}). " + _FIX
            )
