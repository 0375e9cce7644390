"""Adversarial logit pairing (Kannan et al. 2018)."""

import tensorflow as tf

from tfrobust.objectives.base import (Hyperparameter, LossOutput, Objective, paired_logits,
                                      register, sparse_ce, weighted_mean)
from tfrobust.utils import validation


@register("alp")
class ALP(Objective):
    """Mixed clean/adversarial cross-entropy plus a logit-pairing penalty.

    Kannan, Kurakin, Goodfellow, "Adversarial Logit Pairing", 2018.

    ```
    loss = mean_i w_i * [ 0.5 CE(f_train(x_i), y_i) + 0.5 CE(f_train(x'_i), y_i)
                          + beta * mean_k (g_k(x_i) - g_k(x'_i))^2 ]
    ```
    `x'` comes from the model's `attack` (PGD on cross-entropy). `g` is the
    head's attack logits (for a hypersphere head `s * cos`, without margin),
    so the pairing compares the logits the attack sees.

    Args:
        beta: weight of the logit-pairing term (0.5 in the HE reference for ALP+HE).
    """

    term_names = ("clean_loss", "adv_loss", "pairing_loss")
    he_defaults = (20.0, 0.3)
    hyperparameters = (Hyperparameter("beta", 0.5, help="ALP logit-pairing weight",
                                      search=(0.1, 1.0), tuning_name="alp_beta"),)

    def __init__(self, beta=0.5):
        self.beta = validation.check_number("beta", beta, minimum=0.0)

    def compute_loss(self, model, x, x_adv, y, sample_weight=None):
        z = model.features(x, training=True)
        z_adv = model.features(x_adv, training=True)
        clean_logits, adv_logits = paired_logits(model, z, z_adv, "loss", y)
        clean, adv = sparse_ce(clean_logits, y), sparse_ce(adv_logits, y)
        pair, pair_adv = paired_logits(model, z, z_adv, "regularizer", y)
        diff = tf.cast(pair, tf.float32) - tf.cast(pair_adv, tf.float32)
        pairing = tf.reduce_mean(tf.square(diff), axis=-1)
        loss = weighted_mean(0.5 * clean + 0.5 * adv + self.beta * pairing, sample_weight)
        terms = {"clean_loss": tf.reduce_mean(clean), "adv_loss": tf.reduce_mean(adv),
                 "pairing_loss": tf.reduce_mean(pairing)}
        return LossOutput(loss, terms, tf.stop_gradient(model.use_logits(z, "evaluation")),
                          tf.stop_gradient(model.use_logits(z_adv, "evaluation")))

    def get_config(self):
        return {"beta": self.beta}
