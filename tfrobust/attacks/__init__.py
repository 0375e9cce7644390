"""Adversarial attacks: configuration plus `(model, x, y) -> x_adv`.

Every attack is serialisable, looked up by name with `get`, and runs its loop
in graph mode so it works eagerly, in `train_step`, under `tf.distribute`
and under XLA.
"""

from tfrobust.attacks import losses
from tfrobust.attacks.base import Attack, as_logits_fn, get, names, register, serialize
from tfrobust.attacks.pgd import PGD

__all__ = ["Attack", "PGD", "as_logits_fn", "get", "losses", "names", "register", "serialize"]
