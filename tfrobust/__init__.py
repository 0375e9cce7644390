"""tfrobust: adversarially robust image classifiers in Keras 3 on TensorFlow 2.

    import tfrobust
    train = tfrobust.data.load("mnist-sample", split="train", batch_size=128)
    test = tfrobust.data.load("mnist-sample", split="test", batch_size=256)
    model = tfrobust.models.RobustModel(
        backbone=tfrobust.models.small_cnn(input_shape=(28, 28, 1)),
        head=keras.layers.Dense(10),
        attack=tfrobust.attacks.PGD(epsilon=0.3, step_size=0.01, num_steps=40),
    )
    model.compile(optimizer="adam")
    model.fit(train, validation_data=test, epochs=2)

`import tfrobust` imports TensorFlow and registers every layer, model and attack
with Keras, so `keras.models.load_model` reads tfrobust's `.keras` files. The one
exception is the `tfrobust` command itself (the script, or `python -m tfrobust`):
it starts without TensorFlow, so `--help`, `--version` and argument errors answer
at once, and calls `load()` when a command runs.
"""

import importlib as _importlib
import os as _os
import sys as _sys

from tfrobust.version import __version__

_SUBMODULES = ("attacks", "callbacks", "data", "export", "layers", "models", "objectives",
               "optimizers", "tuning", "evaluation")
__all__ = ["__version__", "attacks", "callbacks", "data", "evaluate", "evaluation", "export",
           "layers", "models", "objectives", "optimizers", "tuning"]


def load():
    """Check the Keras backend and import every submodule (which registers its objects)."""
    from tfrobust._backend import check_backend

    check_backend()
    for name in _SUBMODULES:
        globals()[name] = _importlib.import_module(f"tfrobust.{name}")
    globals()["evaluate"] = globals()["evaluation"].evaluate


def _started_as_command():
    """Whether Python is starting the `tfrobust` command: its script, or `python -m
    tfrobust` (while `-m` locates the module, `sys.argv[0]` is "-m")."""
    first = _sys.argv[0] if _sys.argv else ""
    return first == "-m" or _os.path.basename(first) == "tfrobust"


def __getattr__(name):
    # Only reached before `load()` in the command: the first use of a submodule loads them.
    if name in _SUBMODULES or name == "evaluate":
        load()
        return globals()[name]
    raise AttributeError(f"module 'tfrobust' has no attribute {name!r}")


if not _started_as_command():
    load()
