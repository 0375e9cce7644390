"""Standard (non-adversarial) training, the baseline every defence is compared with."""

from tfrobust.objectives.base import LossOutput, Objective, register, sparse_ce, weighted_mean


@register("standard")
class Standard(Objective):
    """Empirical risk minimisation: cross-entropy on clean examples only.

    ```
    loss = mean_i w_i * CE(f_train(x_i), y_i)
    ```
    Needs no training attack; `RobustModel` still reports adversarial
    accuracy on validation data when it has an `eval_attack`.
    """

    needs_attack = False
    uses_attack_steps = False

    def compute_loss(self, model, x, x_adv, y, sample_weight=None):
        z = model.features(x, training=True)
        loss = weighted_mean(sparse_ce(model.use_logits(z, "loss", y), y), sample_weight)
        return LossOutput(loss, {}, model.use_logits(z, "evaluation"), None)
