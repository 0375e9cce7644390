"""Keras callbacks for robust training."""

import warnings

import keras

from tfrobust.backup import BackupAndRestore
from tfrobust.utils import validation

__all__ = ["BackupAndRestore", "CatastrophicOverfittingGuard", "RobustScore"]


@keras.saving.register_keras_serializable(package="tfrobust")
class CatastrophicOverfittingGuard(keras.callbacks.Callback):
    """Stop when robust accuracy collapses, and restore the best weights.

    FGSM-based training (FastAT) can overfit catastrophically: within an epoch,
    accuracy under PGD falls to about zero while accuracy under FGSM rises
    (Wong, Rice, Kolter 2020). Their remedy is early stopping on PGD accuracy;
    this callback watches `monitor` (by default `val_adv_accuracy`, which
    `RobustModel.test_step` measures with a PGD attack) at the end of every
    epoch. When it falls below `(1 - max_drop)` times its best value so far,
    the callback warns, stops training and puts back the weights of the best
    epoch.

    Args:
        monitor: the log entry to watch (higher is better).
        max_drop: the relative drop from the best value that counts as a collapse.
        min_best: collapses are only detected once the best value exceeds this
            (early epochs of PGD-AT-like training are near chance anyway).
    """

    def __init__(self, monitor="val_adv_accuracy", max_drop=0.5, min_best=0.05):
        super().__init__()
        self.monitor = monitor
        self.max_drop = validation.check_number("max_drop", max_drop, minimum=0.0, maximum=1.0)
        self.min_best = validation.check_number("min_best", min_best, minimum=0.0)
        self.best = None
        self.best_epoch = None
        self.best_weights = None
        self.collapsed_epoch = None

    def on_train_begin(self, logs=None):
        self.best, self.best_epoch, self.best_weights, self.collapsed_epoch = None, None, None, None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise ValueError(
                f"Expected the training logs to contain monitor={self.monitor!r}. Received "
                f"logs with {sorted(logs)}; pass validation_data to fit()."
            )
        value = float(logs[self.monitor])
        if self.best is None or value > self.best:
            self.best, self.best_epoch = value, epoch
            self.best_weights = self.model.get_weights()
            return
        if self.best > self.min_best and value < (1.0 - self.max_drop) * self.best:
            self.collapsed_epoch = epoch
            warnings.warn(
                f"Catastrophic overfitting: {self.monitor} fell from {self.best:.4f} "
                f"(epoch {self.best_epoch + 1}) to {value:.4f} (epoch {epoch + 1}). "
                f"Stopping and restoring the weights of epoch {self.best_epoch + 1}.",
                stacklevel=2,
            )
            self.model.set_weights(self.best_weights)
            self.model.stop_training = True

    def get_config(self):
        return {"monitor": self.monitor, "max_drop": self.max_drop, "min_best": self.min_best}


@keras.saving.register_keras_serializable(package="tfrobust")
class RobustScore(keras.callbacks.Callback):
    """Log one number that weighs clean against robust validation accuracy.

    At the end of every epoch, adds to the logs

    ```
    val_robust_score = weight * val_accuracy + (1 - weight) * val_adv_accuracy
    ```

    so that callbacks after it (`EarlyStopping`, `ModelCheckpoint`, a
    keras-tuner search with `objective="val_robust_score"`) and the `History`
    see it. `weight=0` is robust accuracy alone, `weight=1` clean accuracy alone.
    Put it first in the callback list: callbacks see the logs in list order.

    Args:
        weight: the weight of clean accuracy, in [0, 1].
        name: the log entry to write.

    Example:

    >>> model.fit(train, validation_data=val, callbacks=[RobustScore(0.5)])  # doctest: +SKIP
    """

    def __init__(self, weight=0.5, name="val_robust_score"):
        super().__init__()
        self.weight = validation.check_number("weight", weight, minimum=0.0, maximum=1.0)
        self.name = name

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        missing = [k for k in ("val_accuracy", "val_adv_accuracy") if k not in logs]
        if missing:
            raise ValueError(
                f"Expected the logs to contain val_accuracy and val_adv_accuracy for "
                f"{self.name}. Received logs with {sorted(logs)}; pass validation_data to fit() "
                "and give the model an eval_attack."
            )
        logs[self.name] = (self.weight * float(logs["val_accuracy"])
                           + (1.0 - self.weight) * float(logs["val_adv_accuracy"]))

    def get_config(self):
        return {"weight": self.weight, "name": self.name}
