"""Tests of the CIFAR backbones: PreAct ResNet-18 and WideResNet."""

import keras
import numpy as np
import pytest

from tfrobust.models.preact_resnet import preact_resnet18
from tfrobust.models.wide_resnet import wide_resnet

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)


@pytest.fixture(autouse=True)
def _fresh_session():
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session()


def _sizes(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


def _with_linear_head(backbone, num_classes=10):
    logits = keras.layers.Dense(num_classes, name="head")(backbone.output)
    return keras.Model(backbone.input, logits)


def _images(n=2, shape=(32, 32, 3), seed=0):
    return np.random.default_rng(seed).uniform(size=(n, *shape)).astype("float32")


def _bn_channels(model):
    return sum(
        layer.gamma.shape[0] for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    )


def _preact_resnet18_parameters(w):
    """Trainable parameters of PreAct ResNet-18 with `w` stem filters and a Dense(10) head,
    counted by hand: convolutions, two per BatchNorm channel, the head."""
    count, previous = 3 * 9 * w, w  # the stem
    for stage in range(4):
        f = w * 2 ** stage
        count += 9 * previous * f + 9 * f * f + 2 * previous + 2 * f  # block 1
        count += previous * f if previous != f else 0                 # its projection
        count += 2 * (9 * f * f) + 2 * (2 * f)                        # block 2
        previous = f
    return count + 2 * 8 * w + 8 * w * 10 + 10  # final BN, head


@pytest.mark.parametrize("base_width", [16, 32])
def test_a_narrowed_preact_resnet18_has_the_hand_counted_parameters(base_width):
    assert _preact_resnet18_parameters(64) == 11_172_170  # the count below, by hand
    model = _with_linear_head(preact_resnet18(base_width=base_width))
    assert _sizes(model.trainable_weights) == _preact_resnet18_parameters(base_width)
    assert model.layers[-2].output.shape[-1] == 8 * base_width
    with pytest.raises(ValueError, match=r"Expected base_width >= 1. Received: base_width=0"):
        preact_resnet18(base_width=0)


def test_preact_resnet18_parameter_count():
    model = _with_linear_head(preact_resnet18())
    trainable = _sizes(model.trainable_weights)
    final_bn = _sizes(model.get_layer("final_bn").trainable_weights)
    # PyTorch's parameters() count of Wong et al.'s PreActResNet18, which
    # ends in BN-ReLU: 11,159,232 conv + 2 * 3,904 BN + 5,130 linear weights.
    assert trainable == 11_172_170
    # 11,171,146 is the pytorch-cifar PreActResNet18, identical except that it
    # has no final BN; every other layer must therefore agree with it.
    assert final_bn == 2 * 512
    assert trainable - final_bn == 11_171_146
    # Keras also counts the BN moving mean and variance (PyTorch buffers).
    assert _sizes(model.non_trainable_weights) == 2 * _bn_channels(model) == 7_808


@pytest.mark.parametrize(
    "depth, width, expected",
    [(28, 10, 36_479_194), (34, 10, 46_160_474)],
)
def test_wide_resnet_parameter_count_matches_trades(depth, width, expected):
    model = _with_linear_head(wide_resnet(depth, width))
    assert _sizes(model.trainable_weights) == expected
    assert _sizes(model.non_trainable_weights) == 2 * _bn_channels(model)


def test_output_shapes_and_stage_resolutions():
    preact = preact_resnet18()
    assert preact.output_shape == (None, 512)
    assert [preact.get_layer(f"stage{s}_block2_add").output.shape[1:] for s in (1, 2, 3, 4)] == [
        (32, 32, 64), (16, 16, 128), (8, 8, 256), (4, 4, 512)
    ]
    wrn = wide_resnet(16, 2)
    assert wrn.output_shape == (None, 128)
    assert [wrn.get_layer(f"stage{s}_block2_add").output.shape[1:] for s in (1, 2, 3)] == [
        (32, 32, 32), (16, 16, 64), (8, 8, 128)
    ]
    assert wide_resnet(16, 2, input_shape=(64, 64, 3)).output_shape == (None, 128)


def test_block_counts_follow_depth():
    model = wide_resnet(28, 1)
    adds = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
    assert len(adds) == 3 * 4
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    # Stem + 2 per block + projections where channels change (16->32->64);
    # width 1 keeps stage 1 at 16 channels, so its first block is identity.
    assert len(convs) == 1 + 2 * 12 + 2


def test_layers_use_the_pytorch_reference_settings():
    for model in (preact_resnet18(), wide_resnet(16, 2)):
        for layer in model.layers:
            assert not isinstance(layer, keras.layers.Lambda)
            if isinstance(layer, keras.layers.BatchNormalization):
                assert (layer.momentum, layer.epsilon) == (0.9, 1e-5)
            if isinstance(layer, keras.layers.Conv2D):
                assert not layer.use_bias


def test_initialisation_follows_the_references():
    # TRADES: N(0, 2 / (3 * 3 * 128)) for a 3x3 conv with 128 output channels.
    kernel = np.asarray(wide_resnet(16, 2).get_layer("stage3_block2_conv2").kernel)
    assert np.std(kernel) == pytest.approx(np.sqrt(2 / (9 * 128)), rel=0.02)
    # PyTorch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = 3 * 3 * 128.
    kernel = np.asarray(preact_resnet18().get_layer("stage2_block2_conv2").kernel)
    bound = 1 / np.sqrt(9 * 128)
    assert np.abs(kernel).max() <= bound
    assert np.std(kernel) == pytest.approx(bound / np.sqrt(3), rel=0.02)


def test_forward_pass_is_finite_and_nonnegative():
    x = _images(n=3)
    for model in (preact_resnet18(), wide_resnet(16, 2, dropout=0.3)):
        for training in (False, True):
            features = np.asarray(model(x, training=training))
            assert features.shape == (3, model.output_shape[-1])
            assert np.all(np.isfinite(features))
            # Average of ReLU outputs: non-negative, and not collapsed.
            assert features.min() >= 0.0
            assert np.std(features, axis=0).max() > 0.0


def test_strided_convolution_pads_like_pytorch():
    model = wide_resnet(10, 1)
    pad = model.get_layer("stage2_block1_conv1_pad")
    conv = model.get_layer("stage2_block1_conv1")
    conv.kernel.assign(np.ones(conv.kernel.shape, "float32"))
    out = np.asarray(conv(pad(np.ones((1, 32, 32, 16), "float32"))))[0, ..., 0]
    # PyTorch padding=1, stride 2: the first window hangs over the top-left
    # border (2x2 real pixels), the last one lies inside (3x3). Keras "same"
    # would give the reverse.
    assert out.shape == (16, 16)
    assert out[0, 0] == 4 * 16
    assert out[-1, -1] == 9 * 16


def test_normalization_inside_the_model():
    x = _images(n=2)
    mean = np.asarray(CIFAR10_MEAN, "float32")
    std = np.asarray(CIFAR10_STD, "float32")
    normalized = wide_resnet(10, 1, mean=mean, std=std)
    plain = wide_resnet(10, 1)
    assert "normalize" not in [layer.name for layer in plain.layers]

    probe = keras.Model(normalized.input, normalized.get_layer("normalize").output)
    np.testing.assert_allclose(np.asarray(probe(x)), (x - mean) / std, rtol=1e-5, atol=1e-5)

    for layer in plain.layers:
        if layer.weights:
            layer.set_weights(normalized.get_layer(layer.name).get_weights())
    np.testing.assert_allclose(
        np.asarray(normalized(x, training=False)),
        np.asarray(plain((x - mean) / std, training=False)),
        rtol=1e-4, atol=1e-5,
    )
    assert not np.allclose(
        np.asarray(normalized(x, training=False)), np.asarray(plain(x, training=False))
    )


def test_keras_save_load_round_trip(tmp_path):
    x = _images(n=4)
    model = wide_resnet(10, 1, mean=CIFAR10_MEAN, std=CIFAR10_STD, dropout=0.3)
    # A training-mode call moves the BN statistics away from their initial
    # values, so the round trip is checked on non-trivial state.
    model(x, training=True)
    assert np.abs(np.asarray(model.get_layer("final_bn").moving_mean)).max() > 0
    expected = np.asarray(model(x, training=False))

    path = tmp_path / "wrn_10_1.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)

    assert loaded.name == "wide_resnet_10_1"
    assert isinstance(loaded.get_layer("normalize"), keras.layers.Normalization)
    assert loaded.get_layer("stage1_block1_dropout").rate == 0.3
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), expected)


def test_names():
    assert wide_resnet(16, 2).name == "wide_resnet_16_2"
    assert wide_resnet(16, 2, name="wrn").name == "wrn"
    assert preact_resnet18().name == "preact_resnet18"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"depth": 30}, "depth=30"),
        ({"depth": 4}, "depth=4"),
        ({"depth": 28.5}, "depth=28.5"),
        ({"width": 0}, "width=0"),
        ({"width": -2}, "width=-2"),
        ({"width": 2.5}, "width=2.5"),
        ({"dropout": 1.0}, "dropout=1.0"),
        ({"dropout": -0.1}, "dropout=-0.1"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        wide_resnet(**{"depth": 16, "width": 1, **kwargs})


def test_non_numeric_width_raises_type_error():
    with pytest.raises(TypeError, match="width='10'"):
        wide_resnet(16, "10")
