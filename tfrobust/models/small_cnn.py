"""The small convolutional network of the TRADES and ADR MNIST experiments."""

import math

import keras

from tfrobust.models.latent import declare_reference_latent
from tfrobust.models.normalization import maybe_normalize
from tfrobust.utils.validation import check_choice, check_number

#: The layer ADR reads by default: the flattened output of the last pooling layer.
REFERENCE_LATENT = "flatten"
#: Initialisations: "keras" (the default, see `small_cnn`) or "reference" (TRADES' SmallCNN).
INITIALIZATIONS = ("keras", "reference")
#: The dense head's initialiser for each: the reference sets its last layer (fc3) to zero.
HEAD_INITIALIZERS = {"keras": "glorot_uniform", "reference": "zeros"}

# torch.nn.init.kaiming_normal_ with its defaults: N(0, 2 / fan_in), not truncated.
_KAIMING_NORMAL = {
    "class_name": "VarianceScaling",
    "config": {"scale": 2.0, "mode": "fan_in", "distribution": "untruncated_normal"},
}
# PyTorch's default nn.Linear weight, kaiming_uniform(a=sqrt(5)): U(+-1/sqrt(fan_in)).
_TORCH_LINEAR_KERNEL = {
    "class_name": "VarianceScaling",
    "config": {"scale": 1.0 / 3.0, "mode": "fan_in", "distribution": "uniform"},
}


def _dense(units, fan_in, initialization, name):
    """A ReLU dense layer; "reference": PyTorch's `nn.Linear`, weight and bias
    U(+-1/sqrt(fan_in))."""
    if initialization == "keras":
        return keras.layers.Dense(units, activation="relu", name=name)
    bound = 1.0 / math.sqrt(fan_in)
    return keras.layers.Dense(
        units, activation="relu", kernel_initializer=_TORCH_LINEAR_KERNEL,
        bias_initializer=keras.initializers.RandomUniform(-bound, bound), name=name)


def small_cnn(input_shape=(28, 28, 1), mean=None, std=None, dropout=0.5, initialization="keras",
              name="small_cnn"):
    """conv32-conv32-pool-conv64-conv64-pool-fc200-dropout-fc200, returning features.

    The MNIST network of the TRADES reference code (Zhang et al. 2019,
    yaodongyu/TRADES `models/small_cnn.py`, `SmallCNN`), which the ADR PyTorch
    code and tuananhbui89/ASCL use for MNIST: 3x3 "valid" convolutions with
    ReLU, 2x2 max pooling, then fc1 (200, ReLU), dropout 0.5, fc2 (200, ReLU).
    The reference's fc3 (the logits) is the head, which is not included: the
    model outputs the 200-dimensional vector a head reads (`keras.layers.Dense`,
    or the hypersphere head).

    Initialisation, the one difference from the reference by default:
    - `initialization="reference"` is the reference's: convolutions
      N(0, 2 / fan_in) (`kaiming_normal_`) with zero bias; fc1 and fc2
      PyTorch's default `nn.Linear`, weight and bias U(-1/sqrt(fan_in),
      1/sqrt(fan_in)); the reference sets fc3 to zero, which
      `HEAD_INITIALIZERS` declares for the `tfrobust train` dense head (a
      hypersphere head cannot start at zero: its class vectors are normalised).
    - `initialization="keras"` (the default): Keras' Glorot-uniform kernels
      and zero biases everywhere, head included. Why: measured with
      `python experiments/adr_short_runs.py` (237 updates of batch 128 on the
      bundled MNIST sample, PGD-5 at L-inf 0.3, Adam 1e-3; ADR with the
      reference weights at the reference latent), the reference
      initialisation made ADR's latent diverge (mean |z| 1.8e6, local
      compactness 3.5e4, 13.4% clean accuracy, chance), and so did the ADR
      PyTorch reference's own optimiser (SGD 0.01, momentum 0.9: the latent
      overflowed), where the Keras initialisation trained (96.4% clean,
      64.8% PGD-10, local compactness 0.16).
      PGD-AT trains with either (on that run). The full-scale rows with the
      reference initialisation are queued in experiments/lanes.sh.

    The reference latent (`REFERENCE_LATENT`, the layer ADR reads unless told
    otherwise) is `"flatten"`: the flattened output of the last pooling
    layer, 64 x 4 x 4 = 1,024 values for 28x28 inputs, the `z` that the ADR
    PyTorch code's MNIST network returns (tuananhbui89/Adversarial-Divergence-
    Reduction `ADR_pt/small_cnn.py`, class `Mnist`, `forward(..., return_z=True)`;
    the same network as TRADES' `SmallCNN`). Differences from the reference, none of which changes
    what the network computes up to a relabelling of weights:
    - Keras flattens (height, width, channel), PyTorch (channel, height,
      width): the 1,024 values are the same, permuted. ADR's terms (means of
      absolute differences) do not depend on the order; porting PyTorch
      weights needs fc1's rows permuted.
    - Dropout is active in `training=True` calls only. `RobustModel` crafts
      its training attacks in inference mode by default (`attack_bn`), as the
      TRADES code does (`model.eval()` in its attack), so dropout is off
      while crafting and on in the loss.

    Args:
        input_shape: `(height, width, channels)` of images in [0, 1].
        mean, std: optional per-channel normalisation applied inside the model,
            so attacks keep working in [0, 1] pixel space.
        dropout: the rate of the dropout after fc1, in [0, 1); the reference
            0.5. 0 leaves the layer out.
        initialization: `"keras"` (default) or `"reference"`, see above.
        name: the model name.

    Returns:
        A functional `keras.Model` mapping images to `(batch, 200)` features,
        with `reference_latent == "flatten"` declared on it.

    Example:

    >>> backbone = small_cnn()
    >>> backbone.output_shape, backbone.get_layer("flatten").output.shape
    ((None, 200), (None, 1024))
    """
    dropout = check_number("dropout", dropout, minimum=0.0)
    if dropout >= 1.0:
        raise ValueError(f"Expected dropout < 1. Received: dropout={dropout}")
    initialization = check_choice("initialization", initialization, INITIALIZATIONS)
    conv_initializer = _KAIMING_NORMAL if initialization == "reference" else "glorot_uniform"
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = maybe_normalize(inputs, mean, std)
    for filters, conv_name in ((32, "conv1"), (32, "conv2"), (64, "conv3"), (64, "conv4")):
        x = keras.layers.Conv2D(filters, 3, activation="relu", kernel_initializer=conv_initializer,
                                name=conv_name)(x)
        if conv_name in ("conv2", "conv4"):
            x = keras.layers.MaxPooling2D(2, name="pool1" if conv_name == "conv2" else "pool2")(x)
    x = keras.layers.Flatten(name=REFERENCE_LATENT)(x)
    x = _dense(200, x.shape[-1], initialization, "fc1")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    x = _dense(200, 200, initialization, "features")(x)
    return declare_reference_latent(keras.Model(inputs, x, name=name), REFERENCE_LATENT)
