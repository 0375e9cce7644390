"""The optimisation of the adversarial-training references: PyTorch's SGD and their schedules.

The CIFAR-10 references train with `torch.optim.SGD(params, lr, momentum=0.9,
weight_decay=5e-4)` and a short schedule, read here from their code:
- "piecewise" is FastAT's `multistep` (Wong et al. 2020, "Fast is better than free";
  locuslab/fast_adversarial `CIFAR10/train_fgsm.py`: `MultiStepLR` with milestones at 1/2 and
  3/4 of the updates, gamma 0.1, stepped after every batch), PGD-AT's schedule; exactly.
- "cyclic" is the `superconverge` schedule of Rice et al. 2020, "Overfitting in adversarially
  robust deep learning" (locuslab/robust_overfitting `train_cifar.py`: `np.interp(epoch +
  (i + 1) / n, [0, epochs * 2 // 5, epochs], [0, lr_max, 0])`, per batch); exactly.
Differences from neighbouring references, named: FastAT's own `cyclic` (`CyclicLR`) peaks at
half of training, not 2/5, and its first update has rate 0; Rice et al.'s `piecewise`, read at
`epoch + (i + 1) / n`, switches one update before the epoch boundary.

`SGD` is PyTorch's update, which Keras' own SGD is not in two ways:

    buffer = momentum * buffer + (gradient + weight_decay * w)    # PyTorch, and here
    w      = w - learning_rate * buffer

- Keras keeps `learning_rate * gradient` in its momentum buffer, so a rate that changes
  (every schedule here) weights past gradients by past rates; PyTorch by today's.
- Keras' `weight_decay` is decoupled (`w -= learning_rate * weight_decay * w`, outside the
  momentum); PyTorch's, the references', is an L2 term added to the gradient, which the
  momentum then carries. Here `weight_decay` means PyTorch's, on every trainable variable
  (batch-norm scales and biases too, as `model.parameters()` in the references).

`schedule(name, learning_rate, total_steps)` builds `"constant"`, `"piecewise"` or
`"cyclic"` over `total_steps` optimizer updates.
"""

import keras
from keras import ops

SCHEDULES = ("constant", "piecewise", "cyclic")
#: PGD-AT's piecewise schedule: the rate is divided by 10 at these fractions of training.
PIECEWISE_FRACTIONS = (0.5, 0.75)
#: The cyclic schedule (Rice et al.'s `superconverge`) peaks at `epochs * 2 // 5`, this
#: fraction of training.
CYCLIC_PEAK = 0.4


@keras.saving.register_keras_serializable(package="tfrobust")
class SGD(keras.optimizers.SGD):
    """Stochastic gradient descent with momentum and L2 weight decay as in PyTorch.

    Args:
        learning_rate: a float or a `keras.optimizers.schedules.LearningRateSchedule`.
        momentum: the heavy-ball momentum (0.9 in the references).
        weight_decay: the L2 coefficient added to every gradient (`weight_decay * w`),
            PyTorch's `weight_decay` (5e-4 in the references); not Keras' decoupled one.
        **kwargs: the other arguments of `keras.optimizers.SGD` (not `nesterov`).

    Example:

    >>> optimizer = SGD(learning_rate=0.1, momentum=0.9, weight_decay=5e-4)
    """

    def __init__(self, learning_rate=0.01, momentum=0.9, weight_decay=0.0, name="SGD",
                 **kwargs):
        if kwargs.pop("nesterov", False):
            raise ValueError("Expected nesterov=False: tfrobust's SGD is PyTorch's plain "
                             "momentum. Received: nesterov=True")
        kwargs.pop("weight_decay", None)
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"Expected 0 <= momentum < 1. Received: momentum={momentum!r}")
        if float(weight_decay) < 0.0:
            raise ValueError(f"Expected weight_decay >= 0. Received: weight_decay={weight_decay!r}")
        super().__init__(learning_rate=learning_rate, momentum=momentum, name=name, **kwargs)
        self.l2 = float(weight_decay)

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        if self.l2:
            gradient = ops.add(gradient, ops.multiply(ops.cast(self.l2, variable.dtype),
                                                      variable))
        if self.momentum == 0:
            self.assign_sub(variable, ops.multiply(gradient, learning_rate))
            return
        buffer = self.momentums[self._get_variable_index(variable)]
        self.assign(buffer, ops.add(ops.multiply(buffer, ops.cast(self.momentum,
                                                                  variable.dtype)), gradient))
        self.assign_sub(variable, ops.multiply(buffer, learning_rate))

    def get_config(self):
        config = super().get_config()
        config.pop("nesterov", None)
        config["weight_decay"] = self.l2
        return config


@keras.saving.register_keras_serializable(package="tfrobust")
class Triangular(keras.optimizers.schedules.LearningRateSchedule):
    """Rice et al.'s `superconverge` rate: 0 up to `maximum` at `peak_step`, then back to 0.

    The rate of update `s` (0-based) is read after `s + 1` batches, as the reference reads
    it at `epoch + (i + 1) / len(loader)`:

        lr(s) = maximum * (s + 1) / peak_step                              s + 1 <= peak_step
        lr(s) = maximum * (total_steps - s - 1) / (total_steps - peak_step)   otherwise

    Args:
        maximum: the peak rate (0.2 in FastAT).
        peak_step: the update at which it peaks (the reference: 2/5 of training).
        total_steps: the number of updates of the whole training.
    """

    def __init__(self, maximum, peak_step, total_steps):
        if not 0 < peak_step < total_steps:
            raise ValueError(f"Expected 0 < peak_step < total_steps. Received: "
                             f"peak_step={peak_step!r}, total_steps={total_steps!r}")
        self.maximum = float(maximum)
        self.peak_step = int(peak_step)
        self.total_steps = int(total_steps)

    def __call__(self, step):
        t = ops.cast(step, "float32") + 1.0
        rising = t / self.peak_step
        falling = (self.total_steps - t) / (self.total_steps - self.peak_step)
        return self.maximum * ops.clip(ops.minimum(rising, falling), 0.0, 1.0)

    def get_config(self):
        return {"maximum": self.maximum, "peak_step": self.peak_step,
                "total_steps": self.total_steps}


def schedule(name, learning_rate, epochs=None, steps_per_epoch=None):
    """The learning rate `name` (`SCHEDULES`) reaching `learning_rate`, over `epochs` epochs
    of `steps_per_epoch` updates.

    `"constant"`: `learning_rate` throughout (epochs may be None). `"piecewise"`:
    `learning_rate`, divided by 10 after half and again after three quarters of the updates
    (FastAT's `multistep`). `"cyclic"`: `Triangular` peaking at
    `learning_rate` after `epochs * 2 // 5` epochs (Rice et al.'s), or after 2/5 of the updates
    when that is less than one epoch.
    """
    if name not in SCHEDULES:
        raise ValueError(f"Expected lr_schedule in {list(SCHEDULES)}. Received: "
                         f"lr_schedule={name!r}")
    if name == "constant":
        return learning_rate
    total_steps = (epochs or 0) * (steps_per_epoch or 0)
    if total_steps < 2:
        raise ValueError(f"Expected 2 or more updates for lr_schedule={name!r}. Received: "
                         f"epochs={epochs!r} of steps_per_epoch={steps_per_epoch!r}")
    if name == "piecewise":
        # Keras' boundary b keeps the old rate up to update b (0-based) included: update
        # round(f * total) is the first at the new rate, as the reference's epoch 100 of 200.
        boundaries = [max(0, int(round(f * total_steps)) - 1) for f in PIECEWISE_FRACTIONS]
        return keras.optimizers.schedules.PiecewiseConstantDecay(
            boundaries, [learning_rate, learning_rate * 0.1, learning_rate * 0.01])
    peak = (epochs * 2 // 5) * steps_per_epoch or max(1, int(CYCLIC_PEAK * total_steps))
    return Triangular(learning_rate, peak, total_steps)
