"""Fail early, and clearly, when Keras is not running on TensorFlow.

tfrobust's attacks and training steps are written with TensorFlow ops
(`tf.while_loop`, `tf.GradientTape`, `tf.distribute`), so the Keras backend
must be TensorFlow. This module is imported first by `tfrobust/__init__.py`.
"""

import os

_SUPPORTED = "tensorflow"


def check_backend():
    """Raise `ImportError` unless Keras uses (or will use) the TensorFlow backend."""
    requested = os.environ.get("KERAS_BACKEND")
    if requested and requested.strip().lower() != _SUPPORTED:
        raise ImportError(
            "tfrobust requires the TensorFlow backend of Keras. Received: "
            f"KERAS_BACKEND={requested!r}. Unset KERAS_BACKEND or set "
            "KERAS_BACKEND=tensorflow before importing tfrobust."
        )
    import keras

    active = keras.backend.backend()
    if active != _SUPPORTED:
        raise ImportError(
            "tfrobust requires the TensorFlow backend of Keras. Received: "
            f"keras.backend.backend()={active!r} (set in ~/.keras/keras.json "
            "or KERAS_BACKEND). Set it to 'tensorflow'."
        )
