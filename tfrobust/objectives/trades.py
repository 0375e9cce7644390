"""TRADES (Zhang et al. 2019): clean cross-entropy plus a KL robustness term."""

import tensorflow as tf

from tfrobust.objectives.base import (Hyperparameter, LossOutput, Objective, derived_pgd,
                                      kl_divergence, paired_logits, register, sparse_ce,
                                      weighted_mean)
from tfrobust.utils import validation


@register("trades")
class TRADES(Objective):
    """Trade clean accuracy against robustness with a KL term.

    Zhang, Yu, Jiao, Xing, El Ghaoui, Jordan, "Theoretically Principled
    Trade-off between Robustness and Accuracy", ICML 2019.

    ```
    loss = mean_i w_i * [ CE(f_train(x_i), y_i) + beta * KL(p(x_i) || p(x'_i)) ]
    x' = argmax_{x' in B(x, eps)} KL(p(x) || p(x')),   start x + init_std * N(0, 1)
    ```
    The inner maximisation is PGD on the KL with the budget, steps and step
    size of the model's `attack`. `p` is the softmax of the head's attack
    logits (for a hypersphere head `s * cos`, without margin); `f_train` its
    training logits (with margin).

    Args:
        beta: weight of the KL term (6.0 in the reference code).
        init_std: standard deviation of the Gaussian start of the inner attack.
    """

    term_names = ("natural_loss", "robust_loss")
    hyperparameters = (Hyperparameter("beta", 6.0, help="TRADES KL weight", search=(1.0, 10.0),
                                      tuning_name="trades_beta"),)

    def __init__(self, beta=6.0, init_std=0.001):
        self.beta = validation.check_number("beta", beta, minimum=0.0)
        self.init_std = validation.check_number("init_std", init_std, minimum=0.0)

    def craft(self, model, x, y, seed):
        attack = derived_pgd(model.attack, loss="kl", random_start="normal",
                             init_std=self.init_std)
        return tf.stop_gradient(attack.perturb(model.attack_logits_fn(), x, y, seed))

    def compute_loss(self, model, x, x_adv, y, sample_weight=None):
        z = model.features(x, training=True)
        z_adv = model.features(x_adv, training=True)
        # Each features tensor reaches the head through `paired_logits` only (the adversarial
        # rows' loss logits are not used): a hypersphere head reads its input twice, so a
        # third read would make z's gradient a sum of three terms.
        natural = sparse_ce(paired_logits(model, z, z_adv, "loss", y)[0], y)
        robust = kl_divergence(*paired_logits(model, z, z_adv, "regularizer", y))
        loss = weighted_mean(natural + self.beta * robust, sample_weight)
        terms = {"natural_loss": tf.reduce_mean(natural), "robust_loss": tf.reduce_mean(robust)}
        return LossOutput(loss, terms, tf.stop_gradient(model.use_logits(z, "evaluation")),
                          tf.stop_gradient(model.use_logits(z_adv, "evaluation")))

    def get_config(self):
        return {"beta": self.beta, "init_std": self.init_std}
