"""Adversarial attacks: configuration plus `(model, x, y) -> x_adv`.

Every attack is serialisable, looked up by name with `get`, and runs its loop
in graph mode so it works eagerly, in `train_step`, under `tf.distribute`
and under XLA.
"""

from tfrobust.attacks import losses
from tfrobust.attacks.apgd import APGD, APGDCE, APGDDLR
from tfrobust.attacks.apgd_targeted import APGDTargeted
from tfrobust.attacks.autoattack import (AutoAttack, EnsembleCounts, EnsembleResult,
                                         EnsembleSummary, attack_in_turn, run_ensemble,
                                         run_ensemble_on_dataset, standard_attacks)
from tfrobust.attacks.base import Attack, as_logits_fn, get, names, register, serialize
from tfrobust.attacks.fab import FAB
from tfrobust.attacks.fgsm import FGSM, FGSMRS
from tfrobust.attacks.pgd import PGD
from tfrobust.attacks.square import Square

__all__ = [
    "APGD", "APGDCE", "APGDDLR", "APGDTargeted", "Attack", "AutoAttack", "EnsembleCounts",
    "EnsembleResult", "EnsembleSummary", "FAB", "FGSM", "FGSMRS", "PGD", "Square",
    "as_logits_fn", "attack_in_turn", "get", "losses", "names", "register", "run_ensemble",
    "run_ensemble_on_dataset", "serialize", "standard_attacks",
]
