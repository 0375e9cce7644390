"""Training frameworks: how a batch becomes a loss inside `RobustModel.train_step`."""

from tfrobust.objectives import regularizers
from tfrobust.objectives.adr import ADR
from tfrobust.objectives.alp import ALP
from tfrobust.objectives.base import (Hyperparameter, LossOutput, Objective, get, get_class,
                                      names, register)
from tfrobust.objectives.fast_at import FastAT
from tfrobust.objectives.free_at import FreeAT
from tfrobust.objectives.pgd_at import PGDAT
from tfrobust.objectives.standard import Standard
from tfrobust.objectives.trades import TRADES

__all__ = ["ADR", "ALP", "FastAT", "FreeAT", "Hyperparameter", "LossOutput", "Objective", "PGDAT",
           "Standard", "TRADES", "get", "get_class", "names", "register", "regularizers"]
