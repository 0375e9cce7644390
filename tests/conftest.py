"""Shared fixtures: tiny closed-form models and the bundled MNIST sample."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


def linear_classifier(weights, bias=None, input_shape=(2, 2, 1)):
    """`Flatten -> Dense` with the given (D, K) weights: logits = x_flat @ W + b."""
    weights = np.asarray(weights, "float32")
    bias = np.zeros(weights.shape[1], "float32") if bias is None else np.asarray(bias, "float32")
    inputs = keras.Input(input_shape)
    flat = keras.layers.Flatten()(inputs)
    dense = keras.layers.Dense(weights.shape[1], name="linear")
    model = keras.Model(inputs, dense(flat))
    dense.set_weights([weights, bias])
    return model


@pytest.fixture(scope="session")
def mnist_sample():
    """The bundled MNIST sample as float32 arrays: (x_train, y_train, x_test, y_test)."""
    from tfrobust import data

    x_train, y_train = data.load_arrays("mnist-sample", split="train")
    x_test, y_test = data.load_arrays("mnist-sample", split="test")
    return x_train, y_train, x_test, y_test
