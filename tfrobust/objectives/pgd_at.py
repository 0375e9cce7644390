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

    def compute_loss(self, model, x, x_adv, y, sample_weight=None):
        z_adv = model.features(x_adv, training=True)
        adv_train_logits = model.head_logits(z_adv, y, kind="train")
        loss = weighted_mean(sparse_ce(adv_train_logits, y), sample_weight)
        # Clean accuracy for the logs, outside the gradient: one inference forward pass,
        # skipped when the model does not log it.
        clean_logits = (tf.stop_gradient(model(x, training=False))
                        if getattr(model, "train_clean_accuracy", True) else None)
        adv_logits = tf.stop_gradient(model.head_logits(z_adv, y, kind="inference"))
        return LossOutput(loss, {}, clean_logits, adv_logits)
