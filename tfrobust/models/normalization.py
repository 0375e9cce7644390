"""Per-channel input normalisation kept inside the model.

Attacks, epsilons and clipping are all in [0, 1] pixel space (SPEC section 1),
so a network trained on standardised inputs standardises them itself.
"""

import keras
import numpy as np


def maybe_normalize(inputs, mean=None, std=None):
    """Apply `(x - mean) / std` per channel when `mean` or `std` is given."""
    if mean is None and std is None:
        return inputs
    channels = inputs.shape[-1]
    mean = np.broadcast_to(np.asarray(0.0 if mean is None else mean, "float32"), (channels,))
    std = np.broadcast_to(np.asarray(1.0 if std is None else std, "float32"), (channels,))
    if np.any(std <= 0):
        raise ValueError(f"Expected std > 0 for every channel. Received: std={std.tolist()}")
    layer = keras.layers.Normalization(
        axis=-1, mean=mean.tolist(), variance=(std ** 2).tolist(), name="normalize"
    )
    return layer(inputs)
