"""APGD-T: Auto-PGD with the targeted DLR loss against the runner-up classes."""

import tensorflow as tf

from tfrobust.attacks.apgd import APGD, _check_num_classes, merge_runs
from tfrobust.attacks.base import register, runner_up_classes
from tfrobust.utils import validation


@register("apgd-t")
class APGDTargeted(APGD):
    """APGD with the targeted DLR loss, run once per likely wrong class.

    Croce & Hein, "Reliable evaluation of adversarial robustness with an
    ensemble of diverse parameter-free attacks", ICML 2020: the APGD-T of
    AutoAttack.

    For each of the classes ranked 2nd to `num_target_classes + 1` by the
    clean logits, APGD (see `APGD`) maximises the targeted DLR loss

    ```
    DLR_t(z, y, t) = -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)
    ```

    which pushes the target logit `z_t` above the true one. `y` holds the
    true labels: the attack is untargeted in the threat-model sense (any
    misclassification counts) and chooses its targets itself. Each example
    keeps the first run that misclassified it, else the run with the highest
    targeted DLR loss. Every run attacks the whole batch (static shapes, so it
    traces under XLA) unless `stop_when_fooled` is set (see `Attack`): then a
    run attacks only the points no earlier run fooled, as the reference's
    ensemble does, and drops each at the step that fools it.

    Args:
        epsilon: radius of the threat model.
        num_steps: gradient steps per run (>= 0).
        num_restarts: runs per target class (>= 1).
        num_target_classes: how many runner-up classes to target (>= 1),
            clipped to `num_classes - 1`.
        random_start, norm, clip_min, clip_max, seed, jit_compile: see `APGD`
            and `Attack`. `targeted` must stay False.

    Example:

    >>> attack = APGDTargeted(epsilon=8 / 255)
    >>> x_adv = attack(model, x, y)   # doctest: +SKIP
    """

    _picks_targets = True

    def __init__(self, epsilon, *, num_steps=100, num_restarts=1, num_target_classes=9,
                 random_start=True, **kwargs):
        if kwargs.get("targeted", False) is not False:
            raise ValueError(
                "Expected targeted=False: apgd-t takes the true labels and picks its own "
                f"target classes. Received: targeted={kwargs['targeted']!r}"
            )
        if "loss" in kwargs:
            raise ValueError(
                "Expected no loss argument: apgd-t uses the targeted DLR loss. "
                f"Received: loss={kwargs['loss']!r}"
            )
        super().__init__(epsilon, num_steps=num_steps, num_restarts=num_restarts,
                         loss="dlr-targeted", random_start=random_start, **kwargs)
        self.num_target_classes = validation.check_number(
            "num_target_classes", num_target_classes, minimum=1, integer=True
        )

    def _check_logits(self, logits):
        _check_num_classes(logits, 3, "a targeted attack")
        # losses.dlr_targeted normalises by the 1st, 3rd and 4th largest logits.
        _check_num_classes(logits, 4, "the targeted DLR loss (it uses the 4 largest logits)")

    def perturb(self, model, x, y, seed=None):
        logits_fn, x, y, seed = self._prepare(model, x, y, seed)
        clean_logits = tf.stop_gradient(logits_fn(x))  # (B, K)
        self._check_logits(clean_logits)
        num_classes = clean_logits.shape[-1]
        num_targets = self.num_target_classes
        if num_classes is not None:
            num_targets = min(num_targets, num_classes - 1)
        targets = runner_up_classes(clean_logits, num_targets)  # (B, T)
        runs = num_targets * self.num_restarts  # run i: target i // restarts
        seeds = tf.random.experimental.stateless_split(seed, runs)
        best = self._run_once(logits_fn, x, y, seeds[0], target=targets[:, 0])
        if runs == 1:
            return best[0]

        # The other runs in a loop, not written out: the graph holds one run, not 9
        # (a first call on 2 points: 22.9 s, now 7.5 s, the same result bit for bit;
        # `python -m benchmarks.evaluation first-calls`).
        def next_run(i, *best):
            run = self._run_once(logits_fn, x, y, tf.gather(seeds, i),
                                 target=tf.gather(targets, i // self.num_restarts, axis=1),
                                 skip=best[1])
            return (i + 1, *merge_runs(best, run))

        _, x_best, _, _ = tf.while_loop(lambda i, *_: i < runs, next_run,
                                        (tf.constant(1), *best))
        return x_best

    def get_config(self):
        config = super().get_config()
        del config["loss"]
        config["num_target_classes"] = self.num_target_classes
        return config
