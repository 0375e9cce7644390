"""PreAct ResNet-18, the CIFAR backbone of the FastAT and TRADES-style experiments."""

import keras

from tfrobust.models.latent import declare_reference_latent
from tfrobust.models.normalization import maybe_normalize
from tfrobust.utils import validation

#: The layer ADR reads by default: the pooled features after the final BN-ReLU.
REFERENCE_LATENT = "features"

# PyTorch BatchNorm2d defaults: its momentum 0.1 weights the new batch
# statistic, Keras momentum weights the old moving value, so 0.1 becomes 0.9.
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5

# PyTorch's default Conv2d initialiser, kaiming_uniform(a=sqrt(5)), is
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)); the reference PreAct code keeps it.
_TORCH_DEFAULT_INIT = {
    "class_name": "VarianceScaling",
    "config": {"scale": 1.0 / 3.0, "mode": "fan_in", "distribution": "uniform"},
}


def _bn_relu(x, name, suffix=""):
    x = keras.layers.BatchNormalization(
        axis=-1, momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, name=f"{name}_bn{suffix}"
    )(x)
    return keras.layers.ReLU(name=f"{name}_relu{suffix}")(x)


def _conv(x, filters, kernel_size, stride, name, kernel_initializer):
    """A bias-free convolution laid out like PyTorch's `padding=kernel_size // 2`.

    Keras "same" padding with stride 2 pads only the bottom and right, PyTorch
    pads one pixel on every side; the windows then sit one pixel apart and
    weights ported from the PyTorch references would compute something else.
    Explicit symmetric padding keeps the two frameworks identical.
    """
    if kernel_size > 1 and stride > 1:
        x = keras.layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=stride,
        padding=padding,
        use_bias=False,
        kernel_initializer=kernel_initializer,
        name=name,
    )(x)


def _preact_block(x, filters, stride, name):
    """BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3 plus a shortcut (He et al. 2016)."""
    in_filters = x.shape[-1]
    preact = _bn_relu(x, name, "1")
    if stride != 1 or in_filters != filters:
        # The projection reads the pre-activated input, as in the reference
        # code, so both branches see normalised features.
        shortcut = _conv(preact, filters, 1, stride, f"{name}_shortcut", _TORCH_DEFAULT_INIT)
    else:
        shortcut = x
    out = _conv(preact, filters, 3, stride, f"{name}_conv1", _TORCH_DEFAULT_INIT)
    out = _bn_relu(out, name, "2")
    out = _conv(out, filters, 3, 1, f"{name}_conv2", _TORCH_DEFAULT_INIT)
    return keras.layers.Add(name=f"{name}_add")([shortcut, out])


def preact_resnet18(input_shape=(32, 32, 3), mean=None, std=None, name="preact_resnet18",
                    base_width=64):
    """PreAct ResNet-18 returning the `8 * base_width` (512) dimensional pooled features.

    The pre-activation residual network of He et al. 2016, "Identity Mappings
    in Deep Residual Networks", in the CIFAR layout of the adversarial
    training reference code (Wong et al. 2020, "Fast is better than free"):
    a 3x3 convolution with 64 filters, four stages of two pre-activation
    blocks with 64, 128, 256 and 512 filters and strides 1, 2, 2, 2, then a
    final BatchNorm-ReLU and global average pooling. Each block is
    BN-ReLU-conv3x3-BN-ReLU-conv3x3; when the shape changes the shortcut is a
    strided 1x1 convolution of the pre-activated input. Convolutions have no
    bias; BatchNorm uses PyTorch's momentum and epsilon, and strided
    convolutions PyTorch's symmetric padding, so reference weights port
    one-to-one.

    With a `Dense(10)` head the network has 11,172,170 trainable parameters,
    the count of the Wong et al. `PreActResNet18`. The 11,171,146 often quoted
    is the pytorch-cifar variant without the final BatchNorm (2 x 512 fewer).
    Keras also counts the BatchNorm moving statistics, which PyTorch keeps as
    buffers, so `count_params()` is larger by 7,808.

    The classification head is not included: the model outputs the feature
    vector that a head (`keras.layers.Dense`, or the hypersphere head) reads.
    That vector, the pooled output of the final BatchNorm-ReLU, is also the
    reference latent ADR reads unless told otherwise (`REFERENCE_LATENT`,
    the layer `"features"`): the ADR TensorFlow code regularises the vector
    its logits layer reads, after its final BN, leaky ReLU (0.1) and global
    average pooling (tuananhbui89/Adversarial-Divergence-Reduction
    `ADR_tf/model.py`); this network's final activation is a plain ReLU.

    `base_width` narrows it for small compute budgets: the stem and the four stages have
    `base_width`, 2x, 4x and 8x filters (64, 128, 256, 512 in the reference); at 16 the
    network has 1/16 of the reference's multiply-adds and about 1/16 of its parameters.

    Args:
        input_shape: `(height, width, channels)` of images in [0, 1].
        mean, std: optional per-channel normalisation applied inside the model,
            so attacks keep working in [0, 1] pixel space.
        name: the model name.
        base_width: filters of the stem and the first stage (64: the reference network).

    Returns:
        A functional `keras.Model` mapping images to `(batch, 8 * base_width)` features.

    Example:

    >>> backbone = preact_resnet18(mean=(0.4914, 0.4822, 0.4465),
    ...                            std=(0.2471, 0.2435, 0.2616))
    >>> backbone.output_shape
    (None, 512)
    """
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = maybe_normalize(inputs, mean, std)
    base_width = validation.check_number("base_width", base_width, minimum=1, integer=True)
    x = _conv(x, base_width, 3, 1, "stem_conv", _TORCH_DEFAULT_INIT)
    stages = ((base_width, 1), (2 * base_width, 2), (4 * base_width, 2), (8 * base_width, 2))
    for stage, (filters, stride) in enumerate(stages, start=1):
        x = _preact_block(x, filters, stride, f"stage{stage}_block1")
        x = _preact_block(x, filters, 1, f"stage{stage}_block2")
    # Pre-activation blocks end in an addition, so the last block's output
    # is neither normalised nor rectified until this final BN-ReLU.
    x = _bn_relu(x, "final")
    x = keras.layers.GlobalAveragePooling2D(name=REFERENCE_LATENT)(x)
    return declare_reference_latent(keras.Model(inputs, x, name=name), REFERENCE_LATENT)
