"""The hypersphere embedding head: its maths, and how the frameworks use its logits."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfrobust import attacks, objectives
from tfrobust.layers import HypersphereDense
from tfrobust.models import RobustModel


def head_with(units=5, dims=7, seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    head = HypersphereDense(units, **kwargs)
    head.build((None, dims))
    return head


def np_cos(z, w):
    return (z / np.linalg.norm(z, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=0))


def test_the_three_kinds_of_logits_match_the_formulas():
    head = head_with(scale=15.0, margin=0.2)
    rng = np.random.default_rng(0)
    z = rng.normal(size=(9, 7)).astype("float32")
    y = rng.integers(0, 5, size=9)
    cos = np_cos(z.astype("float64"), head.kernel.numpy().astype("float64"))
    np.testing.assert_allclose(head(z).numpy(), cos, atol=1e-6)
    np.testing.assert_allclose(head.scaled_logits(z).numpy(), 15 * cos, atol=1e-5)
    margin = 15 * (cos - 0.2 * np.eye(5)[y])
    np.testing.assert_allclose(head.margin_logits(z, y).numpy(), margin, atol=1e-5)
    # The training loss is sparse cross-entropy on s * (cos - m onehot(y)).
    shifted = margin - margin.max(1, keepdims=True)
    expected = np.mean(np.log(np.exp(shifted).sum(1)) - shifted[np.arange(9), y])
    model = RobustModel(keras.Sequential([keras.Input((7,))]), head,
                        attack=attacks.PGD(epsilon=0.1), eval_attack=False)
    loss = objectives.base.weighted_mean(objectives.base.sparse_ce(
        model.head_logits(z, y, kind="train"), y))
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_cosines_are_bounded_and_invariant_to_rescaling():
    head = head_with()
    z = np.random.default_rng(1).normal(size=(16, 7)).astype("float32") * 30
    cos = head(z).numpy()
    assert cos.min() >= -1 - 1e-6 and cos.max() <= 1 + 1e-6
    np.testing.assert_allclose(head(z * 0.01).numpy(), cos, atol=1e-5)   # features rescaled
    kernel = head.kernel.numpy()
    kernel[:, 2] *= 7.5                                                   # one class vector
    head.kernel.assign(kernel)
    np.testing.assert_allclose(head(z).numpy(), cos, atol=1e-5)


def test_the_feature_gradient_of_the_margin_loss_is_orthogonal_to_the_features():
    head = head_with(scale=15.0, margin=0.3)
    z = tf.constant(np.random.default_rng(2).normal(size=(12, 7)), tf.float32)
    y = np.arange(12) % 5
    with tf.GradientTape() as tape:
        tape.watch(z)
        loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=y, logits=head.margin_logits(z, y)))
    grad = tape.gradient(loss, z).numpy()
    cosines = np.sum(grad * z.numpy(), 1) / (np.linalg.norm(grad, axis=1)
                                             * np.linalg.norm(z.numpy(), axis=1))
    assert np.abs(cosines).max() < 1e-5
    assert np.linalg.norm(grad, axis=1).min() > 1e-3  # not trivially zero


def test_predictions_do_not_depend_on_scale_or_margin():
    z = np.random.default_rng(3).normal(size=(32, 7)).astype("float32")
    predictions = []
    for scale, margin in [(1.0, 0.0), (15.0, 0.2), (64.0, 0.5)]:
        head = head_with(seed=4, scale=scale, margin=margin)
        predictions.append(np.argmax(head(z).numpy(), -1))
        np.testing.assert_array_equal(np.argmax(head.scaled_logits(z).numpy(), -1),
                                      predictions[-1])
    np.testing.assert_array_equal(predictions[0], predictions[1])
    np.testing.assert_array_equal(predictions[0], predictions[2])


def test_ablations_switch_normalisations_off():
    z = np.random.default_rng(5).normal(size=(4, 7)).astype("float32")
    fn_only = head_with(seed=6, weight_normalization=False)
    w = fn_only.kernel.numpy()
    np.testing.assert_allclose(fn_only(z).numpy(),
                               (z / np.linalg.norm(z, axis=1, keepdims=True)) @ w, atol=1e-5)
    wn_only = head_with(seed=6, feature_normalization=False)
    np.testing.assert_allclose(wn_only(z).numpy(), z @ (w / np.linalg.norm(w, axis=0)),
                               atol=1e-5)


def test_the_training_attack_differentiates_cross_entropy_on_scaled_cosines():
    # Identity backbone: the features are the flattened image, so the gradient of
    # CE(s cos) with respect to x has a closed form.
    head = head_with(units=3, dims=4, seed=7, scale=10.0, margin=0.4)
    backbone = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten()])
    model = RobustModel(backbone, head, attack=attacks.PGD(epsilon=0.1), eval_attack=False)
    x = np.random.default_rng(8).uniform(0.1, 0.9, size=(5, 2, 2, 1)).astype("float32")
    y = np.array([0, 1, 2, 1, 0])
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_sum(attacks.losses.cross_entropy(model.attack_logits_fn()(xt), y))
    grad = tape.gradient(loss, xt).numpy().reshape(5, -1)

    z = x.reshape(5, -1).astype("float64")
    w = head.kernel.numpy().astype("float64")
    w_n = w / np.linalg.norm(w, axis=0)
    norm = np.linalg.norm(z, axis=1, keepdims=True)
    cos = (z / norm) @ w_n                                             # (B, K)
    p = np.exp(10 * cos) / np.exp(10 * cos).sum(1, keepdims=True)
    residual = p - np.eye(3)[y]                                       # dCE/dlogit
    # d(s cos_k)/dz = s (w~_k / ||z|| - cos_k z / ||z||^2)
    expected = 10 * (residual @ w_n.T / norm - (residual * cos).sum(1, keepdims=True) * z / norm**2)
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)
    # ... and no margin: the attack logits are s * cos, not the margin logits.
    np.testing.assert_allclose(model.attack_logits_fn()(x).numpy(), 10 * cos, atol=1e-5)
    np.testing.assert_allclose(model(x).numpy(), cos, atol=1e-6)      # inference: cos


def test_trades_kl_and_alp_pairing_use_scaled_cosines(mnist_sample):
    head = head_with(units=10, dims=784, seed=9, scale=15.0, margin=0.2)
    backbone = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten()])
    x, y = mnist_sample[0][:8], mnist_sample[1][:8]
    x_adv = np.clip(x + 0.1, 0, 1)
    for objective in (objectives.TRADES(beta=6.0), objectives.ALP(beta=0.5)):
        model = RobustModel(backbone, head, objective=objective,
                            attack=attacks.PGD(epsilon=0.1), eval_attack=False)
        out = objective.compute_loss(model, tf.constant(x), tf.constant(x_adv), y)
        z, z_adv = x.reshape(8, -1), x_adv.reshape(8, -1)
        s_cos, s_cos_adv = 15 * head(z).numpy(), 15 * head(z_adv).numpy()
        if isinstance(objective, objectives.TRADES):
            p = np.exp(s_cos - s_cos.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            q = np.exp(s_cos_adv - s_cos_adv.max(1, keepdims=True))
            q /= q.sum(1, keepdims=True)
            expected = np.mean(np.sum(p * np.log(p / q), 1))
            assert float(out.terms["robust_loss"]) == pytest.approx(expected, rel=1e-4)
        else:
            expected = np.mean(np.mean((s_cos - s_cos_adv) ** 2, 1))
            assert float(out.terms["pairing_loss"]) == pytest.approx(expected, rel=1e-4)


def test_keras_round_trip_of_a_model_with_the_hypersphere_head(tmp_path, mnist_sample):
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 5, 2),
                                 keras.layers.ReLU(), keras.layers.Flatten()])
    head = HypersphereDense(10, scale=20.0, margin=0.3, feature_normalization=True,
                            weight_normalization=False)
    model = RobustModel(backbone, head, objective=objectives.ALP(beta=0.5),
                        attack=attacks.PGD(epsilon=0.3, num_steps=2))
    model.compile(optimizer="adam")
    x, y = mnist_sample[0][:32], mnist_sample[1][:32]
    model.fit(x, y, epochs=1, verbose=0)
    path = os.path.join(tmp_path, "he.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored.head, HypersphereDense)
    assert restored.head.get_config() == head.get_config()
    np.testing.assert_array_equal(restored.predict(x, verbose=0), model.predict(x, verbose=0))


def test_bad_head_arguments():
    with pytest.raises(ValueError, match="scale=0"):
        HypersphereDense(10, scale=0)
    with pytest.raises(ValueError, match="margin=-0.1"):
        HypersphereDense(10, margin=-0.1)
    with pytest.raises(ValueError, match="units=0"):
        HypersphereDense(0)
    with pytest.raises(ValueError, match="labels=None"):
        head_with().logits_for(np.ones((1, 7), "float32"), None, "train")
