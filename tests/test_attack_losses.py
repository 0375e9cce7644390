"""The attack losses against values computed by hand."""

import numpy as np
import pytest
import tensorflow as tf

from tfrobust.attacks import losses

LOGITS = np.array([[3.0, 1.0, 0.5, -1.0], [0.2, 2.0, 1.5, 1.0]], "float32")
LABELS = np.array([0, 2])


def test_cw_margin_by_hand():
    # max_{i != y} z_i - z_y: 1.0 - 3.0 and 2.0 - 1.5
    np.testing.assert_allclose(losses.cw_margin(LOGITS, LABELS).numpy(), [-2.0, 0.5], atol=1e-6)


def test_dlr_by_hand_and_its_invariances():
    # -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)
    expected = [-(3.0 - 1.0) / (3.0 - 0.5), -(1.5 - 2.0) / (2.0 - 1.0)]
    np.testing.assert_allclose(losses.dlr(LOGITS, LABELS).numpy(), expected, rtol=1e-6)
    shifted_scaled = 7.0 * LOGITS + 3.0
    np.testing.assert_allclose(losses.dlr(shifted_scaled, LABELS).numpy(), expected, rtol=1e-5)


def test_targeted_dlr_by_hand():
    target = np.array([3, 1])
    # -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)
    expected = [-(3.0 - -1.0) / (3.0 - (0.5 - 1.0) / 2), -(1.5 - 2.0) / (2.0 - (1.0 + 0.2) / 2)]
    np.testing.assert_allclose(losses.dlr_targeted(LOGITS, LABELS, target=target).numpy(),
                               expected, rtol=1e-6)


def test_cross_entropy_and_kl_by_hand():
    z = LOGITS.astype("float64")
    log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
    np.testing.assert_allclose(losses.cross_entropy(LOGITS, LABELS).numpy(),
                               -log_p[[0, 1], LABELS], rtol=1e-6)
    clean = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]], "float32")
    log_c = clean - np.log(np.exp(clean).sum(1, keepdims=True))
    expected = np.sum(np.exp(log_c) * (log_c - log_p), 1)
    np.testing.assert_allclose(losses.kl_to_clean(LOGITS, LABELS, clean_logits=clean).numpy(),
                               expected, rtol=1e-5)


def test_loss_lookup_and_errors():
    assert losses.get("DLR") is losses.dlr
    with pytest.raises(ValueError, match="loss='hinge'"):
        losses.get("hinge")
    with pytest.raises(ValueError, match="clean_logits=None"):
        losses.kl_to_clean(tf.constant(LOGITS), LABELS)


def test_runner_up_classes_rank_by_logit_and_break_ties_by_class_index():
    from tfrobust.attacks.base import runner_up_classes

    logits = tf.constant([[0.1, 3.0, 2.0, 2.0, -1.0],
                          [5.0, 1.0, 1.0, 1.0, 4.0]])
    np.testing.assert_array_equal(runner_up_classes(logits, 3).numpy(), [[2, 3, 0], [4, 1, 2]])
    np.testing.assert_array_equal(runner_up_classes(logits, 1).numpy(), [[2], [4]])
