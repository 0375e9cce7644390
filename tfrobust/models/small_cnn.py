"""The small convolutional network of the TRADES and ADR MNIST experiments."""

import keras

from tfrobust.models.normalization import maybe_normalize


def small_cnn(input_shape=(28, 28, 1), mean=None, std=None, name="small_cnn"):
    """conv32-conv32-pool-conv64-conv64-pool-fc200-fc200, returning features.

    The MNIST network of the TRADES reference code (Zhang et al. 2019), also
    used by the ADR reference code: 3x3 "valid" convolutions with ReLU, 2x2
    max pooling, two fully connected layers of 200 units. The classification
    head is not included: the model outputs the 200-dimensional feature
    vector that a head (`keras.layers.Dense`, or the hypersphere head) and the
    ADR regularisers read.

    Args:
        input_shape: `(height, width, channels)` of images in [0, 1].
        mean, std: optional per-channel normalisation applied inside the model,
            so attacks keep working in [0, 1] pixel space.
        name: the model name.

    Returns:
        A functional `keras.Model` mapping images to `(batch, 200)` features.

    Example:

    >>> backbone = small_cnn()
    >>> backbone.output_shape
    (None, 200)
    """
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = maybe_normalize(inputs, mean, std)
    x = keras.layers.Conv2D(32, 3, activation="relu", name="conv1")(x)
    x = keras.layers.Conv2D(32, 3, activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = keras.layers.Conv2D(64, 3, activation="relu", name="conv3")(x)
    x = keras.layers.Conv2D(64, 3, activation="relu", name="conv4")(x)
    x = keras.layers.MaxPooling2D(2, name="pool2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(200, activation="relu", name="fc1")(x)
    x = keras.layers.Dense(200, activation="relu", name="features")(x)
    return keras.Model(inputs, x, name=name)
