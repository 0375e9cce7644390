"""Evaluate one model on one device and under MirroredStrategy over two logical CPUs.

Run as a separate process (the CPU must be split into logical devices before
TensorFlow starts): `python mirrored_evaluation.py`. Prints one JSON line: the
two reports' per-example outcomes and accuracies, the largest difference of an
attack's points, and the devices the model's slices ran on.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfrobust  # noqa: E402
from tfrobust import attacks, data  # noqa: E402
from tfrobust.evaluation import inputs  # noqa: E402
from tfrobust.models import small_cnn  # noqa: E402

EPSILON = 0.1
keras.utils.set_random_seed(0)
x, y = data.load_arrays("mnist-sample", "test", limit=40)
model = keras.Sequential([small_cnn(), keras.layers.Dense(10)])
model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
model.fit(*data.load_arrays("mnist-sample", "train", limit=1024), epochs=1, verbose=0,
          batch_size=64)
members = [attacks.APGDCE(epsilon=EPSILON, num_steps=10), attacks.Square(epsilon=EPSILON,
                                                                         num_queries=20)]


def evaluate(strategy):
    return tfrobust.evaluate(model, (x, y), epsilon=EPSILON, attacks=members,
                             sweep_attacks=(), checks=["black_box"], batch_size=8,
                             strategy=strategy, verbose=False)


one = evaluate(tf.distribute.OneDeviceStrategy("/cpu:0"))
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with mirrored.scope():
    two = evaluate(None)  # the strategy in scope

# The points one attack makes, with the model split over both devices and not.
seen = set()


def recording(images):
    seen.add(images.device)
    return model(images, training=False)


split = inputs.evaluation_logits(recording, mirrored)
single = inputs.evaluation_logits(model, tf.distribute.OneDeviceStrategy("/cpu:0"))
attack = attacks.APGDCE(epsilon=EPSILON, num_steps=10)
gap = float(np.abs(attack(split, x, y, seed=[0, 1]) - attack(single, x, y, seed=[0, 1])).max())
print(json.dumps({
    "broken_by": [one.broken_by, two.broken_by],
    "robust_accuracy": [one.robust_accuracy, two.robust_accuracy],
    "clean_accuracy": [one.clean_accuracy, two.clean_accuracy],
    "checks": [[c.numbers for c in one.checks], [c.numbers for c in two.checks]],
    "max_point_difference": gap,
    "devices": sorted(seen),
}))
