"""Train the same RobustModel on one device and under MirroredStrategy; print max weight gaps.

Run as a separate process (the CPU must be split into logical devices before
TensorFlow starts): `python mirrored_equivalence.py METHOD [METHOD ...]`.
Prints one JSON line: {method: max |w_single - w_mirrored|}.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tfrobust import attacks, data, objectives, recipe  # noqa: E402
from tfrobust.models import RobustModel  # noqa: E402

# Deterministic inner attacks: each replica draws random starts for its own
# slice from its own stream, which cannot reproduce a single device's draw, so
# random starts are off (any objective's `init_std` or `random_start`). TRADES
# without its Gaussian start sits exactly at the KL's minimum, where the sign of a
# round-off gradient decides the step, so its inner attack takes no steps here: the
# test covers its loss and the gradient reduction, not its attack.
DETERMINISTIC = {"init_std": 0.0, "random_start": False}
# ADR's per-example terms, then all terms (global ones pair within a replica).
ADR = {
    "adr-local": lambda: objectives.ADR("pgd-at", [
        objectives.regularizers.LocalCompactness(1.0),
        objectives.regularizers.LocalSmoothness(1.0),
        objectives.regularizers.ConditionalEntropy(1.0)]),
    "adr": lambda: objectives.ADR("pgd-at"),
}


def objective(method):
    """ADR as above, or any registered method at its reference hyperparameters, deterministic."""
    if method in ADR:
        return ADR[method]()
    built = recipe.build_objective(recipe.resolve(dict(recipe.defaults(), method=method)))
    config = built.get_config()
    return type(built).from_config(
        {**config, **{k: v for k, v in DETERMINISTIC.items() if k in config}})


def build(method):
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential([
        keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 5, strides=2, activation="relu"),
        keras.layers.Flatten(), keras.layers.Dense(16, activation="relu"),
    ])
    model = RobustModel(backbone, keras.layers.Dense(10), objective=objective(method),
                        attack=attacks.PGD(epsilon=0.3, num_steps=0 if method == "trades" else 3,
                                           step_size=0.1, random_start=False),
                        eval_attack=False)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), jit_compile=False)
    return model


def train(method, strategy, x, y):
    with strategy.scope():
        model = build(method)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    model.fit(dataset, epochs=1, verbose=0)
    return model.get_weights()


def main():
    x, y = data.load_arrays("mnist-sample", "train", limit=128)
    gaps = {}
    for method in sys.argv[1:]:
        single = train(method, tf.distribute.get_strategy(), x, y)
        mirrored = train(method, tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), x, y)
        moved = max(float(np.max(np.abs(a - b)))
                    for a, b in zip(single, build(method).get_weights()))
        gaps[method] = {
            "max_gap": max(float(np.max(np.abs(a - b))) for a, b in zip(single, mirrored)),
            "moved": moved,
        }
    print(json.dumps(gaps))


if __name__ == "__main__":
    main()
