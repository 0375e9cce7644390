"""Training frameworks: how a batch becomes a loss inside `RobustModel.train_step`."""

from tfrobust.objectives.base import LossOutput, Objective, get, names, register
from tfrobust.objectives.pgd_at import PGDAT
from tfrobust.objectives.standard import Standard

__all__ = ["LossOutput", "Objective", "PGDAT", "Standard", "get", "names", "register"]
