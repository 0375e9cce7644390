"""Free adversarial training (Shafahi et al. 2019): replayed minibatches."""

import tensorflow as tf

from tfrobust.attacks import projections
from tfrobust.objectives.base import (Hyperparameter, LossOutput, Objective, register, sparse_ce,
                                      weighted_mean)
from tfrobust.utils import validation


@register("free-at")
class FreeAT(Objective):
    """Adversarial training for free: each minibatch is replayed `replays` times.

    Shafahi, Najibi, Ghiasi, Xu, Dickerson, Studer, Davis, Taylor, Goldstein,
    "Adversarial Training for Free!", NeurIPS 2019.

    Every replay does one forward/backward pass that yields both the weight
    gradient and the input gradient: the weights take an optimizer step and the
    perturbation an FGSM step,
    ```
    for r in 1..replays:
        g_w, g_delta = grad CE(f_train(clip(x + delta)), y)
        w     <- optimizer step with g_w
        delta <- Proj_{B(0, eps)}(delta + eps * sign(g_delta))
    ```
    `delta` is carried from one minibatch to the next (it is not reset), in a
    variable sized by `fit` for a full batch (the first batch of a dataset, or
    `batch_size` for arrays); a smaller last batch uses and updates its
    leading rows only. The model's `attack` sets the threat model
    (epsilon, norm, range).

    Cost: one `fit` epoch makes `replays` optimizer updates per batch, each at
    the price of one clean training step, so train for `epochs / replays`
    epochs to match the cost of `epochs` of standard training (the paper's
    convention). The carried perturbation is not part of the saved model, nor
    of what `model.save_weights` writes, so Keras' `BackupAndRestore` resumes
    with a zero perturbation (which the next replays rebuild);
    `tfrobust.backup.BackupAndRestore` keeps it when training on one device.

    Logs: `accuracy` is measured on the clean batch at the weights the batch
    starts from, and `adv_accuracy` on the last replay's forward pass (before
    its update), as for the other frameworks. (Until issue 18's restructuring
    both were measured after the last replay's update; the weights it trains
    are bitwise the same, `tests/scripts/pin_behaviour.py`.)

    Args:
        replays: how many times each minibatch is replayed (4 or 8 in the paper).
    """

    he_defaults = (10.0, 0.2)
    hyperparameters = (Hyperparameter("replays", 4, kind="int", help="FreeAT minibatch replays",
                                      search=(2, 8), minimum=1),)
    uses_attack_steps = False  # one FGSM step per replay
    computes_clean_logits = False

    def __init__(self, replays=4):
        self.replays = validation.check_number("replays", replays, minimum=1, integer=True)
        self._delta = None

    @property
    def updates_per_batch(self):
        return self.replays

    def build(self, model, batch_size):
        """Create the carried perturbation, one row per example of a full batch."""
        shape = (int(batch_size), *model.backbone.input_shape[1:])
        if self._delta is not None and self._delta.shape[0] >= shape[0]:
            return False
        with model.distribute_strategy.scope():
            # Each replica carries the perturbation of its own slice of the batch.
            self._delta = tf.Variable(
                tf.zeros(shape), trainable=False, name="free_at_delta",
                synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.NONE,
            )
        return True

    def state_variables(self):
        return [] if self._delta is None else [self._delta]

    def craft(self, model, x, y, seed):
        """None: FreeAT's perturbation is carried across batches and stepped in `update`."""
        return None

    def update(self, model, x, x_adv, y, sample_weight, minimize):
        """`replays` updates of the weights, each followed by an FGSM step of the perturbation."""
        del x_adv
        if self._delta is None:
            raise RuntimeError("FreeAT state is built by RobustModel.fit; call fit(), not "
                               "train_step() directly.")
        attack = model.attack
        stored = self._delta.read_value()
        batch = tf.shape(x)[0]
        delta = stored[:batch]  # a smaller last batch uses the leading rows
        for _ in range(self.replays):  # a handful of replays: unrolled in the graph

            def loss_fn(delta=delta):
                x_adv = projections.clip_to_range(x + delta, attack.clip_min, attack.clip_max)
                return self.compute_loss(model, x, x_adv, y, sample_weight)

            out, (grad,) = minimize(loss_fn, watch=[delta])
            delta = delta + projections.steepest_ascent_step(grad, attack.epsilon, attack.norm)
            delta = projections.project(x + delta, x, attack.epsilon, attack.norm) - x
        self._delta.assign(tf.concat([delta, stored[batch:]], 0))
        return out

    def compute_loss(self, model, x, x_adv, y, sample_weight=None):
        """PGD-AT's loss on the replayed batch; the adversarial logits of the replay for the
        logs."""
        z_adv = model.features(x_adv, training=True)
        loss = weighted_mean(sparse_ce(model.use_logits(z_adv, "loss", y), y),
                             sample_weight)
        return LossOutput(loss, {}, None,
                          tf.stop_gradient(model.use_logits(z_adv, "evaluation")))

    def get_config(self):
        return {"replays": self.replays}
