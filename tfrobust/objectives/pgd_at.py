"""PGD adversarial training (Madry et al. 2018)."""

import tensorflow as tf

from tfrobust.objectives.base import LossOutput, Objective, register, sparse_ce, weighted_mean


@register("pgd-at")
class PGDAT(Objective):
    """Minimise cross-entropy on PGD adversarial examples.

    Madry, Makelov, Schmidt, Tsipras, Vladu, "Towards Deep Learning Models
    Resistant to Adversarial Attacks", ICLR 2018.

    ```
    loss = mean_i w_i * CE(f_train(x'_i), y_i),   x' = PGD(f_attack, x, y)
    ```
    The attack is the model's `attack` (PGD with a uniform random start and
    cross-entropy in the reference code). `f_train` is the head's training
    logits (with margin for a hypersphere head); `f_attack` its attack logits.

    Example:

    >>> model = RobustModel(backbone, head, objective=PGDAT(),
    ...                     attack=PGD(epsilon=0.3, step_size=0.01, num_steps=40))  # doctest: +SKIP
    """

    term_names = ()
    # The loss needs no clean pass: RobustModel makes one, outside the tape, if it logs
    # clean accuracy.
    computes_clean_logits = False

    def compute_loss(self, model, x, x_adv, y, sample_weight=None):
        z_adv = model.features(x_adv, training=True)
        adv_train_logits = model.use_logits(z_adv, "loss", y)
        loss = weighted_mean(sparse_ce(adv_train_logits, y), sample_weight)
        adv_logits = tf.stop_gradient(model.use_logits(z_adv, "evaluation"))
        return LossOutput(loss, {}, None, adv_logits)
