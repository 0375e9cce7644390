"""ADR regularisers against hand-computed values, their gradients, and ADR in training."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfrobust import attacks, objectives
from tfrobust.layers import HypersphereDense
from tfrobust.models import RobustModel
from tfrobust.objectives import regularizers as R

HERE = os.path.dirname(os.path.abspath(__file__))
Z = np.array([[1.0, 2.0], [0.0, -1.0], [3.0, 1.0]], "float32")       # clean features (B=3, D=2)
Z_ADV = np.array([[1.5, 1.0], [0.5, -1.0], [2.0, 2.0]], "float32")   # adversarial features
LOGITS = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]], "float32")
LOGITS_ADV = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 2.0]], "float32")
Y = np.array([0, 1, 0])


def value(regularizer):
    return regularizer(tf.constant(Z), tf.constant(Z_ADV), tf.constant(LOGITS),
                       tf.constant(LOGITS_ADV), Y, 3).numpy()


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_local_compactness_by_hand():
    # d(z_i, z'_i) = mean |z - z'|: (0.5 + 1)/2, (0.5 + 0)/2, (1 + 1)/2
    np.testing.assert_allclose(value(R.LocalCompactness()), [0.75, 0.25, 1.0], atol=1e-6)


def test_label_weights_for_3_and_100_classes_and_one_class():
    w3 = R.label_weights(np.array([0, 1, 0]), 3).numpy()
    other = 1 - 1 / 0.99
    np.testing.assert_allclose(w3, [[1, other, 1], [other, 1, other], [1, other, 1]], atol=1e-6)
    labels = np.array([0, 99, 57, 99])
    w100 = R.label_weights(labels, 100).numpy()
    np.testing.assert_allclose(w100, np.where(labels[:, None] == labels[None], 1.0, other),
                               atol=1e-6)
    np.testing.assert_allclose(R.label_weights(np.array([4, 4, 4]), 10).numpy(), np.ones((3, 3)))


def test_global_compactness_by_hand():
    other = 1 - 1 / 0.99
    w = np.array([[1, other, 1], [other, 1, other], [1, other, 1]])
    d = np.array([[np.mean(np.abs(Z[j] - Z_ADV[i])) for j in range(3)] for i in range(3)])
    np.testing.assert_allclose(value(R.GlobalCompactness()), (w * d).mean(1), atol=1e-6)
    # The reference total: (1/B^2) sum_ij w_ij d(z_j, z'_i).
    assert value(R.GlobalCompactness()).mean() == pytest.approx((w * d).sum() / 9, abs=1e-6)


def test_smoothness_and_entropy_by_hand():
    p, q = softmax(LOGITS.astype("float64")), softmax(LOGITS_ADV.astype("float64"))
    local = -np.sum(p * np.log(q), 1)
    np.testing.assert_allclose(value(R.LocalSmoothness()), local, rtol=1e-5)
    other = 1 - 1 / 0.99
    w = np.array([[1, other, 1], [other, 1, other], [1, other, 1]])
    pairwise = -(np.log(q) @ p.T)                # [i, j] = CE(p_j, q_i)
    np.testing.assert_allclose(value(R.GlobalSmoothness(1.0)), (w * pairwise).mean(1), rtol=1e-5)
    np.testing.assert_allclose(value(R.ConditionalEntropy()), -np.sum(q * np.log(q), 1),
                               rtol=1e-5)


def gradients(regularizer):
    tensors = [tf.Variable(a) for a in (Z, Z_ADV, LOGITS, LOGITS_ADV)]
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(regularizer(*tensors, Y, 3))
    return [g if g is None else g.numpy() for g in tape.gradient(total, tensors)]


@pytest.mark.parametrize("regularizer", [R.LocalCompactness(), R.GlobalCompactness(),
                                         R.LocalSmoothness(), R.GlobalSmoothness(1.0)])
def test_compactness_and_smoothness_flow_only_through_the_adversarial_side(regularizer):
    g_z, g_z_adv, g_logits, g_logits_adv = gradients(regularizer)
    assert g_z is None and g_logits is None          # the clean side is frozen
    moving = g_z_adv if "compactness" in regularizer.name else g_logits_adv
    assert moving is not None and np.abs(moving).max() > 1e-3


def test_entropy_flows_through_both_arguments_of_the_adversarial_prediction():
    _, _, g_logits, g_logits_adv = gradients(R.ConditionalEntropy())
    assert g_logits is None
    # H(softmax(f)) = -sum q log q: both q and log q depend on f'; check the total derivative.
    q = softmax(LOGITS_ADV.astype("float64"))
    log_q = np.log(q)
    h = -np.sum(q * log_q, 1, keepdims=True)
    expected = -q * (log_q + h)        # dH/df'_k = -q_k (log q_k + H)
    np.testing.assert_allclose(g_logits_adv, expected, rtol=1e-5, atol=1e-7)


def test_compactness_can_grow_the_latent_it_shares_weights_with():
    """Why ADR's latent can explode (experiments/adr_scale.py): z = c a and z' = c b come from
    the same weight c, but the clean side is a frozen target, so the local compactness
    c mean_k |a_k - b_k| has dL/dc = mean_k sign(b_k - a_k) b_k (c > 0), negative when the
    adversary lowers activations with more mass than it raises: gradient descent then raises
    c, the distance with it, and the sign does not depend on c. Through both sides dL/dc =
    mean|a - b| >= 0 instead: descent can only shrink the latent."""
    a = np.array([[4.0, 0.0, 1.0]], "float32")       # clean activations (ReLU outputs)

    def local(c, b):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(R.LocalCompactness()(c * a, c * b, LOGITS[:1], LOGITS_ADV[:1],
                                                      Y[:1], 3))
        return loss.numpy(), tape.gradient(loss, c).numpy()

    # The adversary lowers 4 to 1 and raises 0 to 0.5 and 1 to 1.5: (-1 + 0.5 + 1.5) / 3 > 0.
    raised = np.array([[1.0, 0.5, 1.5]], "float32")
    for c0 in (1.0, 10.0):
        loss, gradient = local(tf.Variable(c0), raised)
        assert loss == pytest.approx(c0 * (3 + 0.5 + 0.5) / 3)
        assert gradient == pytest.approx((-1 + 0.5 + 1.5) / 3)
    # It lowers 4 to 1 and 1 to 0.5, raises 0 to 0.5: (-1 + 0.5 - 0.5) / 3 < 0.
    lowered = np.array([[1.0, 0.5, 0.5]], "float32")
    c = tf.Variable(1.0)
    for _ in range(50):                               # plain gradient descent on c, step 0.1
        loss, gradient = local(c, lowered)
        assert gradient == pytest.approx(-1 / 3)
        c.assign_sub(0.1 * gradient)
    assert c.numpy() == pytest.approx(1 + 50 * 0.1 / 3, rel=1e-5)   # up by 1/30 every step
    assert local(c, lowered)[0] == pytest.approx(c.numpy() * (3 + 0.5 + 0.5) / 3)  # and d
    # The full gradient of c mean|a - b| (no stop-gradient) is mean|a - b| > 0.
    c = tf.Variable(1.0)
    with tf.GradientTape() as tape:
        full = tf.reduce_mean(tf.abs(c * a - c * lowered))
    assert tape.gradient(full, c).numpy() == pytest.approx(np.abs(a - lowered).mean())


def test_a_batch_of_one_class_gives_finite_values():
    labels = np.zeros(3, "int64")
    for regularizer in R.reference_regularizers():
        out = regularizer(tf.constant(Z), tf.constant(Z_ADV), tf.constant(LOGITS),
                          tf.constant(LOGITS_ADV), labels, 3).numpy()
        assert np.all(np.isfinite(out))


def tiny_model(objective, head=None, **kwargs):
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 5, 2, name="c"),
                                 keras.layers.ReLU(), keras.layers.Flatten(),
                                 keras.layers.Dense(16, activation="relu")])
    model = RobustModel(backbone, head or keras.layers.Dense(10), objective=objective,
                        attack=attacks.PGD(epsilon=0.3, num_steps=2), eval_attack=False, **kwargs)
    model.compile(optimizer="adam")
    return model


def test_each_term_is_logged_under_its_own_name_and_the_total_adds_up(mnist_sample):
    x, y = mnist_sample[0][:64], mnist_sample[1][:64]
    model = tiny_model("pgd-at", regularizers=[R.LocalCompactness(2.0),
                                               R.ConditionalEntropy(0.5)])
    assert isinstance(model.objective, objectives.ADR) and model.objective.base == "pgd-at"
    x_adv = model.objective.craft(model, tf.constant(x), tf.constant(y), tf.constant([1, 2]))
    out = model.objective.compute_loss(model, tf.constant(x), x_adv, y)
    t = {k: float(v) for k, v in out.terms.items()}
    expected = 0.5 * t["clean_loss"] + 0.5 * t["adv_loss"] + 2.0 * t["local_compactness"] \
        + 0.5 * t["conditional_entropy"]
    assert float(out.loss) == pytest.approx(expected, rel=1e-5)
    history = model.fit(x, y, batch_size=32, epochs=1, verbose=0).history
    assert {"clean_loss", "adv_loss", "local_compactness", "conditional_entropy"} <= set(history)


def test_adr_on_trades_on_an_intermediate_layer_with_the_hypersphere_head(tmp_path, mnist_sample):
    x, y = mnist_sample[0][:64], mnist_sample[1][:64]
    objective = objectives.ADR("trades", layer="c", beta=6.0)
    model = tiny_model(objective, head=HypersphereDense(10, scale=15.0, margin=0.2))
    history = model.fit(x, y, batch_size=32, epochs=2, verbose=0).history
    assert {"natural_loss", "robust_loss", "global_compactness"} <= set(history)
    assert all(np.isfinite(v[-1]) for v in history.values())
    # The regularised activations are the named conv layer's (flattened 12*12*4).
    h, _ = objective._forward(model, tf.constant(x[:2]))
    assert h.shape == (2, 12 * 12 * 4)
    path = os.path.join(tmp_path, "adr.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.objective.get_config() == objective.get_config()
    with pytest.raises(ValueError, match="layer='nope'"):
        tiny_model(objectives.ADR(layer="nope")).fit(x, y, verbose=0)


def test_bad_adr_configuration():
    with pytest.raises(ValueError, match="base='alp'"):
        objectives.ADR(base="alp")
    with pytest.raises(ValueError, match="weight=-1"):
        R.LocalCompactness(-1)
    with pytest.raises(ValueError, match="PGD-AT or TRADES"):
        tiny_model("alp", regularizers=["local-compactness"])


def test_adr_trains_under_mirrored_strategy_with_pairs_per_replica():
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, "scripts", "mirrored_equivalence.py"),
         "adr-local", "adr"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    gaps = json.loads(result.stdout.strip().splitlines()[-1])
    # Per-example terms only: the same weights as one device.
    assert gaps["adr-local"]["moved"] > 1e-2 and gaps["adr-local"]["max_gap"] < 1e-5
    # With the global terms, pairs form within each replica's half batch, so the
    # run differs from one device on the whole batch, but it trains.
    assert gaps["adr"]["moved"] > 1e-2 and np.isfinite(gaps["adr"]["max_gap"])
