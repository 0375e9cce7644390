"""Fast adversarial training (Wong et al. 2020): FGSM from a random start."""

import tensorflow as tf

from tfrobust.objectives.base import Hyperparameter, derived_pgd, register
from tfrobust.objectives.pgd_at import PGDAT
from tfrobust.utils import validation


@register("fast-at")
class FastAT(PGDAT):
    """PGD-AT with a single FGSM step from a uniform random start.

    Wong, Rice, Kolter, "Fast is better than free: Revisiting adversarial
    training", ICLR 2020.

    ```
    x' = clip(Proj_{B(x, eps)}(x + u + alpha * sign(grad CE)))),  u ~ U(-eps, eps),
    alpha = step_ratio * eps (1.25 * eps: 10/255 for eps = 8/255)
    loss = mean_i w_i * CE(f_train(x'_i), y_i)
    ```
    The model's `attack` sets the threat model (epsilon, norm, range); the
    single step replaces its inner loop. FastAT can overfit catastrophically
    (robust accuracy collapses to ~0 within an epoch): train it with
    `tfrobust.callbacks.CatastrophicOverfittingGuard`, as `tfrobust train
    --method fast-at` does.

    Args:
        step_ratio: the FGSM step as a multiple of epsilon.
        random_start: start from a uniform point in the ball (Wong et al.'s
            fix for FGSM training); `False` is plain FGSM training.
    """

    hyperparameters = (Hyperparameter("step_ratio", 1.25, help="FastAT FGSM step / epsilon",
                                      search=(1.0, 1.5), strict=True),)
    uses_attack_steps = False  # a single FGSM step of its own size

    def __init__(self, step_ratio=1.25, random_start=True):
        self.step_ratio = validation.check_number("step_ratio", step_ratio, minimum=0.0)
        self.random_start = bool(random_start)

    def craft(self, model, x, y, seed):
        attack = derived_pgd(model.attack, num_steps=1, random_start=self.random_start,
                             step_size=self.step_ratio * model.attack.epsilon)
        return tf.stop_gradient(attack.perturb(model.attack_logits_fn(), x, y, seed))

    def callbacks(self):
        """The guard that restores the weights if robust accuracy collapses."""
        from tfrobust.callbacks import CatastrophicOverfittingGuard

        return [CatastrophicOverfittingGuard()]

    def get_config(self):
        return {"step_ratio": self.step_ratio, "random_start": self.random_start}
