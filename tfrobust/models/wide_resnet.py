"""Wide residual networks, the CIFAR backbone of the TRADES and ADR experiments."""

import keras

from tfrobust.models.latent import declare_reference_latent
from tfrobust.models.normalization import maybe_normalize
from tfrobust.models.preact_resnet import _bn_relu, _conv
from tfrobust.utils.validation import check_number

#: The layer ADR reads by default: the pooled features after the final BN-ReLU.
REFERENCE_LATENT = "features"

# The TRADES code draws conv weights from N(0, 2 / (k * k * out_channels)),
# He et al.'s fan-out initialisation without truncation.
_TRADES_CONV_INIT = {
    "class_name": "VarianceScaling",
    "config": {"scale": 2.0, "mode": "fan_out", "distribution": "untruncated_normal"},
}


def _wide_block(x, filters, stride, dropout, name):
    """BN-ReLU-conv3x3(stride)-BN-ReLU-[dropout]-conv3x3 plus a shortcut."""
    in_filters = x.shape[-1]
    preact = _bn_relu(x, name, "1")
    if in_filters != filters or stride != 1:
        # As in TRADES' BasicBlock: a changing block projects its
        # pre-activated input, an unchanged one adds its raw input.
        shortcut = _conv(preact, filters, 1, stride, f"{name}_shortcut", _TRADES_CONV_INIT)
    else:
        shortcut = x
    out = _conv(preact, filters, 3, stride, f"{name}_conv1", _TRADES_CONV_INIT)
    out = _bn_relu(out, name, "2")
    if dropout > 0:
        out = keras.layers.Dropout(dropout, name=f"{name}_dropout")(out)
    out = _conv(out, filters, 3, 1, f"{name}_conv2", _TRADES_CONV_INIT)
    return keras.layers.Add(name=f"{name}_add")([shortcut, out])


def wide_resnet(depth=34, width=10, input_shape=(32, 32, 3), mean=None, std=None, dropout=0.0,
                name=None):
    """WideResNet-`depth`-`width` returning the `64 * width` pooled features.

    The wide residual network of Zagoruyko & Komodakis 2016, "Wide Residual
    Networks", as written in the TRADES reference code (Zhang et al. 2019),
    whose WRN-34-10 is the standard CIFAR-10 backbone of TRADES, the
    hypersphere-embedding and ADR papers. A 3x3 convolution with 16 filters
    is followed by three stages of `n = (depth - 4) / 6` pre-activation basic
    blocks with `16 * width`, `32 * width` and `64 * width` filters and
    strides 1, 2, 2, then a final BatchNorm-ReLU and global average pooling.
    Each block is BN-ReLU-conv3x3-BN-ReLU-[dropout]-conv3x3; when the number
    of channels changes the shortcut is a 1x1 convolution of the
    pre-activated input. Convolutions have no bias and use the TRADES
    initialisation; BatchNorm uses PyTorch's momentum and epsilon, and strided
    convolutions PyTorch's symmetric padding, so reference weights port
    one-to-one.

    With a `Dense(10)` head, WRN-28-10 has 36,479,194 and WRN-34-10
    46,160,474 trainable parameters. TRADES' `WideResNet` also builds a
    `sub_block1` that `forward` never uses; it is left out here, so counts of
    that module's `parameters()` (48,262,586 for WRN-34-10) are larger.

    The classification head is not included: the model outputs the feature
    vector that a head (`keras.layers.Dense`, or the hypersphere head) reads,
    which is also ADR's reference latent (`REFERENCE_LATENT`, `"features"`),
    as for `preact_resnet18`, whose docstring names the reference.

    Args:
        depth: total depth, `6 * n + 4` with `n >= 1` blocks per stage
            (16, 28, 34, 70, ...).
        width: positive integer widening factor `k`.
        input_shape: `(height, width, channels)` of images in [0, 1].
        mean, std: optional per-channel normalisation applied inside the model,
            so attacks keep working in [0, 1] pixel space.
        dropout: dropout rate between the two convolutions of every block,
            in [0, 1); 0 adds no dropout layer.
        name: the model name, `f"wide_resnet_{depth}_{width}"` when `None`.

    Returns:
        A functional `keras.Model` mapping images to `(batch, 64 * width)`
        features.

    Example:

    >>> backbone = wide_resnet(depth=16, width=2)
    >>> backbone.name, backbone.output_shape
    ('wide_resnet_16_2', (None, 128))
    """
    depth = check_number("depth", depth, integer=True)
    if depth < 10 or (depth - 4) % 6 != 0:
        raise ValueError(
            "Expected depth = 6 * n + 4 with n >= 1 blocks per stage (e.g. 16, 28, 34). "
            f"Received: depth={depth}"
        )
    width = check_number("width", width, minimum=1, integer=True)
    dropout = check_number("dropout", dropout, minimum=0.0)
    if dropout >= 1.0:
        raise ValueError(f"Expected dropout < 1. Received: dropout={dropout}")
    if name is None:
        name = f"wide_resnet_{depth}_{width}"
    blocks_per_stage = (depth - 4) // 6

    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = maybe_normalize(inputs, mean, std)
    x = _conv(x, 16, 3, 1, "stem_conv", _TRADES_CONV_INIT)
    stages = ((16 * width, 1), (32 * width, 2), (64 * width, 2))
    for stage, (filters, stride) in enumerate(stages, start=1):
        for block in range(1, blocks_per_stage + 1):
            x = _wide_block(
                x, filters, stride if block == 1 else 1, dropout, f"stage{stage}_block{block}"
            )
    x = _bn_relu(x, "final")
    x = keras.layers.GlobalAveragePooling2D(name=REFERENCE_LATENT)(x)
    return declare_reference_latent(keras.Model(inputs, x, name=name), REFERENCE_LATENT)
