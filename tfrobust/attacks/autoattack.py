"""AutoAttack (Croce & Hein 2020): an ensemble of diverse parameter-free attacks."""

import dataclasses
import time

import keras
import numpy as np
import tensorflow as tf

from tfrobust.attacks.apgd import APGDCE
from tfrobust.attacks.apgd_targeted import APGDTargeted
from tfrobust.attacks.base import Attack, as_logits_fn, get, register, serialize
from tfrobust.attacks.fab import FAB
from tfrobust.attacks.square import Square
from tfrobust.utils import validation

VERSIONS = ("standard", "custom")


def standard_attacks(epsilon, norm="linf", seed=0, clip_min=0.0, clip_max=1.0):
    """The members of AutoAttack's "standard" version, with the reference's settings.

    APGD-CE (100 steps, 1 restart), APGD-T (targeted DLR, 9 target classes,
    100 steps each), FAB-T (9 target classes, 100 steps each) and Square
    (5000 queries), all at the same epsilon, norm and range.
    """
    common = {"epsilon": epsilon, "norm": norm, "seed": seed, "clip_min": clip_min,
              "clip_max": clip_max}
    return [
        APGDCE(num_steps=100, num_restarts=1, **common),
        APGDTargeted(num_steps=100, num_restarts=1, num_target_classes=9, **common),
        FAB(num_steps=100, num_restarts=1, num_target_classes=9, **common),
        Square(num_queries=5000, num_restarts=1, **common),
    ]


@dataclasses.dataclass
class EnsembleResult:
    """What an ensemble run found, per example and per attack.

    Attributes:
        x_adv: (N, ...) the worst case per example: the first attack's point
            that fooled the model, else the clean input.
        clean_correct: (N,) bool, the model is right on the clean input.
        robust: (N,) bool, the model is right on the clean input and on every
            attack's output.
        broken_by: (N,) the index into `attack_names` of the attack that broke
            the example; -1 if it stayed robust, -2 if it was wrong already.
        attack_names: the members' registry names, in the order they ran.
        robust_accuracy_after: (len(attacks),) robust accuracy after each attack.
        seconds: (len(attacks),) wall-clock time spent in each attack.
        attacked: (len(attacks),) how many examples each attack ran on.
    """

    x_adv: np.ndarray
    clean_correct: np.ndarray
    robust: np.ndarray
    broken_by: np.ndarray
    attack_names: list
    robust_accuracy_after: list
    seconds: list
    attacked: list

    @property
    def clean_accuracy(self):
        return float(np.mean(self.clean_correct))

    @property
    def robust_accuracy(self):
        return float(np.mean(self.robust))


@dataclasses.dataclass
class EnsembleCounts:
    """Which attack broke each example, and what each attack did (see `attack_in_turn`).

    Attributes:
        broken_by: (N,) int, the index of the first attack that broke the
            example; -1 if it stayed robust, -2 if it was not a candidate
            (the model is wrong on the clean input).
        attacked: (num_attacks,) int, examples each attack ran on while they
            were still robust.
        broken: (num_attacks,) int, examples each attack broke first.
        robust_accuracy_after: (num_attacks,) robust accuracy after each
            attack, over all N examples.
        seconds: (num_attacks,) the seconds each attack's calls reported.
    """

    broken_by: np.ndarray
    attacked: np.ndarray
    broken: np.ndarray
    robust_accuracy_after: np.ndarray
    seconds: np.ndarray


def attack_in_turn(num_attacks, candidates, attack_batch, batch_size, *, regroup=True,
                   run_on_all=(), on_batch=None):
    """AutoAttack's orchestration: attacks in turn, each only on the examples still robust.

    The candidates (the examples the model classifies correctly) start robust;
    an example is broken by the first attack whose output fools the model and
    is not attacked again. This is the one implementation of that rule:
    `run_ensemble` (AutoAttack) and `tfrobust.evaluate` both call it, with
    their own `attack_batch` (the evaluation's caches each call and counts
    invalid adversarial examples).

    Args:
        num_attacks: how many attacks run, in order (indices 0 to num_attacks - 1).
        candidates: (N,) bool, the examples to attack.
        attack_batch: `attack_batch(index, indices, group) -> (fooled, seconds)`
            runs attack `index` on the examples `indices` (a non-empty int
            array) and returns, per example, whether its adversarial example
            fools the model, and the seconds spent. `group` numbers the batch.
        batch_size: most examples per call.
        regroup: True: before each attack, the examples still robust are
            grouped anew into full batches (fewest calls), and attacks run one
            after the other. False: fixed groups, the candidates in slices of
            `batch_size`; each group goes through every attack before the next
            group starts, each attack on the group's examples still robust. A
            call is then determined by the group and what earlier attacks found
            in it alone, so a caller can cache it per group.
        run_on_all: with fixed groups, indices of attacks that run on every
            example of the group, broken ones too, so that their results also
            stand alone; they break only the examples still robust.
        on_batch: optional `on_batch(index, attacked, broken_by)` after each
            call, with the counts so far (`attacked[index]` is this attack's).

    Returns:
        An `EnsembleCounts`.

    Example: attack `i` fools exactly example `i`.

    >>> counts = attack_in_turn(2, [True, True, False], lambda i, idx, g: (idx == i, 0.0), 8)
    >>> counts.broken_by.tolist(), counts.attacked.tolist()
    ([0, 1, -2], [2, 1])
    """
    candidates = np.asarray(candidates, bool)
    run_on_all = set(run_on_all)
    if regroup and run_on_all:
        raise ValueError("Expected run_on_all only with fixed groups (regroup=False). "
                         f"Received: regroup=True, run_on_all={sorted(run_on_all)}")
    broken_by = np.where(candidates, -1, -2)
    attacked = np.zeros(num_attacks, np.int64)
    seconds = np.zeros(num_attacks)

    def turn(index, group, examples):
        alive = broken_by[examples] == -1
        indices = examples if index in run_on_all else examples[alive]
        if not len(indices):
            return
        fooled, spent = attack_batch(index, indices, group)
        broken_by[indices[np.asarray(fooled, bool) & (broken_by[indices] == -1)]] = index
        attacked[index] += int(alive.sum())
        seconds[index] += spent
        if on_batch is not None:
            on_batch(index, attacked, broken_by)

    if regroup:
        for index in range(num_attacks):
            for group, examples in enumerate(_groups(broken_by == -1, batch_size)):
                turn(index, group, examples)
    else:
        for group, examples in enumerate(_groups(candidates, batch_size)):
            for index in range(num_attacks):
                turn(index, group, examples)
    broken = np.bincount(broken_by[broken_by >= 0], minlength=num_attacks).astype(np.int64)
    after = (int(candidates.sum()) - np.cumsum(broken)) / len(candidates)
    return EnsembleCounts(broken_by, attacked, broken, after, seconds)


def _groups(mask, batch_size):
    indices = np.flatnonzero(mask)
    return [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]


def _predict(logits_fn, x, batch_size):
    predictions = [np.argmax(logits_fn(tf.constant(x[i:i + batch_size])).numpy(), -1)
                   for i in range(0, len(x), batch_size)]
    return np.concatenate(predictions) if predictions else np.zeros((0,), np.int64)


def _stopping(attack):
    return attack if attack.stop_when_fooled else attack.stopping_when_fooled()


def run_ensemble(attacks, model, x, y, batch_size=256, verbose=True):
    """Run `attacks` in turn, each only on the examples still robust.

    This is AutoAttack's orchestration (an example broken by one attack is not
    attacked again, see `attack_in_turn`) over a list of attack objects. The
    result is the per-example worst case over the attacks.

    Args:
        attacks: a list of `Attack` objects (or names/configs for `attacks.get`).
        model: a Keras model or a callable from images to logits.
        x: float images (N, H, W, C) in the attacks' range; y: int labels (N,).
        batch_size: examples per attack call.
        verbose: show a progress bar.

    Returns:
        An `EnsembleResult`.
    """
    # Copies that stop on an example once it is fooled: the same examples break, and
    # none of an attack's passes is spent on one already broken.
    attacks = [_stopping(get(a)) for a in attacks]
    if not attacks:
        raise ValueError("Expected at least one attack. Received: attacks=[]")
    batch_size = validation.check_number("batch_size", batch_size, minimum=1, integer=True)
    x = validation.check_images(x, "x", clip_min=attacks[0].clip_min,
                                clip_max=attacks[0].clip_max)
    y = validation.check_labels(y, name="y", num_examples=len(x))
    logits_fn = as_logits_fn(model)
    correct = _predict(logits_fn, x, batch_size) == y
    x_adv = x.copy()

    def attack_batch(index, indices, group):
        started = time.perf_counter()
        candidate = attacks[index](model, x[indices], y[indices]).numpy()
        fooled = _predict(logits_fn, candidate, batch_size) != y[indices]
        x_adv[indices[fooled]] = candidate[fooled]
        return fooled, time.perf_counter() - started

    progress = keras.utils.Progbar(len(attacks) * len(x), unit_name="example") if verbose else None

    def on_batch(index, attacked, broken_by):
        progress.update(index * len(x) + int(attacked[index]),
                        values=[("robust_accuracy", float(np.mean(broken_by == -1)))])

    counts = attack_in_turn(len(attacks), correct, attack_batch, batch_size,
                            on_batch=on_batch if verbose else None)
    robust = counts.broken_by == -1
    if progress is not None:
        progress.update(len(attacks) * len(x), values=[("robust_accuracy", float(np.mean(robust)))])
    names = [a.registry_name or type(a).__name__ for a in attacks]
    return EnsembleResult(x_adv, correct, robust, counts.broken_by, names,
                          counts.robust_accuracy_after.tolist(), counts.seconds.tolist(),
                          counts.attacked.tolist())


@dataclasses.dataclass
class EnsembleSummary:
    """Counts from an ensemble run over a dataset, batch by batch (no images kept).

    Attributes:
        num_examples: examples seen.
        clean_accuracy: accuracy on the clean inputs.
        robust_accuracy: accuracy under the per-example worst case.
        robust_accuracy_after: robust accuracy after each attack.
        broken_by: examples broken by each attack (in `attack_names` order).
        attack_names: the members' names.
        seconds: wall-clock time per attack, summed over batches.
    """

    num_examples: int
    clean_accuracy: float
    robust_accuracy: float
    robust_accuracy_after: list
    broken_by: list
    attack_names: list
    seconds: list


def run_ensemble_on_dataset(attacks, model, dataset, verbose=True):
    """`run_ensemble` over a `tf.data` pipeline of `(images, labels)` batches.

    Memory stays bounded by one batch: each batch is attacked (each attack
    only on the batch's examples still robust) and reduced to counts.
    Deterministic given the attacks' seeds and the order of the batches.

    Returns:
        An `EnsembleSummary`.
    """
    attacks = [_stopping(get(a)) for a in attacks]  # once, so each traces once
    cardinality = int(dataset.cardinality())
    progress = keras.utils.Progbar(cardinality if cardinality > 0 else None, unit_name="batch") \
        if verbose else None
    total = correct = robust = 0
    after = np.zeros(len(attacks))
    broken = np.zeros(len(attacks), np.int64)
    seconds = np.zeros(len(attacks))
    for step, batch in enumerate(dataset):
        x, y = batch[0].numpy(), batch[1].numpy()
        result = run_ensemble(attacks, model, x, y, batch_size=max(len(x), 1), verbose=False)
        total += len(x)
        correct += int(result.clean_correct.sum())
        robust += int(result.robust.sum())
        after += np.asarray(result.robust_accuracy_after) * len(x)
        broken += np.bincount(result.broken_by[result.broken_by >= 0], minlength=len(attacks))
        seconds += np.asarray(result.seconds)
        if progress is not None:
            progress.update(step + 1, values=[("robust_accuracy", robust / total)])
    if total == 0:
        raise ValueError("Expected a non-empty dataset. Received: a dataset with no batches")
    names = [a.registry_name or type(a).__name__ for a in attacks]
    return EnsembleSummary(total, correct / total, robust / total, (after / total).tolist(),
                           broken.tolist(), names, seconds.tolist())


@register("autoattack")
class AutoAttack(Attack):
    """AutoAttack: APGD-CE, APGD-T, FAB-T and Square, each on the points still robust.

    Croce & Hein, "Reliable evaluation of adversarial robustness with an
    ensemble of diverse parameter-free attacks", ICML 2020.

    `run(model, x, y)` is the evaluation entry point: it attacks only the
    examples that every earlier member left robust and returns an
    `EnsembleResult` with the per-example worst case and which attack broke
    each example. Calling the object (`attack(model, x, y)`, or `perturb`
    inside a graph) runs every member on the whole batch and keeps, per
    example, the first member's point that fools the model: the same worst
    case, at the cost of attacking points already broken, with static shapes
    for `tf.function` and XLA.

    Args:
        epsilon: radius of the threat model.
        norm: `"linf"` or `"l2"`.
        version: `"standard"` (the reference's four attacks and settings) or
            `"custom"` with `attacks` given.
        attacks: for `"custom"`, a list of attacks, names or configs; they
            should share the ensemble's epsilon, norm and range.
        clip_min, clip_max, seed, jit_compile: see `Attack`.

    Example:

    >>> result = AutoAttack(epsilon=0.3).run(model, x_test, y_test)  # doctest: +SKIP
    >>> result.robust_accuracy                                       # doctest: +SKIP
    """

    def __init__(self, epsilon, *, norm="linf", version="standard", attacks=None, **kwargs):
        super().__init__(epsilon, norm=norm, **kwargs)
        self.version = validation.check_choice("version", version, VERSIONS)
        if self.version == "standard":
            if attacks is not None:
                raise ValueError("Expected attacks=None for version='standard'. Received: "
                                 f"attacks={attacks!r}; use version='custom'.")
            self.attacks = standard_attacks(self.epsilon, self.norm, self.seed,
                                            self.clip_min, self.clip_max)
        else:
            if not attacks:
                raise ValueError("Expected a non-empty list of attacks for version='custom'. "
                                 f"Received: attacks={attacks!r}")
            self.attacks = [get(a) for a in attacks]
        for member in self.attacks:
            if member.epsilon > self.epsilon or member.norm != self.norm:
                raise ValueError(
                    f"Expected every member within the ensemble's threat model ({self.norm}, "
                    f"epsilon={self.epsilon:g}). Received: {member!r}"
                )

    def run(self, model, x, y, batch_size=256, verbose=True):
        """Evaluate `model` on `(x, y)`; see `run_ensemble`."""
        return run_ensemble(self.attacks, model, x, y, batch_size=batch_size, verbose=verbose)

    def evaluate(self, model, dataset, verbose=True):
        """Robust accuracy over a `tf.data` pipeline; see `run_ensemble_on_dataset`."""
        return run_ensemble_on_dataset(self.attacks, model, dataset, verbose=verbose)

    def perturb(self, model, x, y, seed=None):
        logits_fn, x, y, seed = self._prepare(model, x, y, seed)
        seeds = tf.random.experimental.stateless_split(seed, len(self.attacks))
        best = x
        fooled = tf.zeros_like(y, dtype=tf.bool)
        for i, member in enumerate(self.attacks):
            candidate = member.perturb(model, x, y, seeds[i])
            hit = tf.logical_and(
                tf.logical_not(fooled),
                tf.not_equal(tf.argmax(logits_fn(candidate), -1, output_type=tf.int32), y))
            best = tf.where(tf.reshape(hit, [-1] + [1] * (x.shape.rank - 1)), candidate, best)
            fooled = tf.logical_or(fooled, hit)
        return best

    def get_config(self):
        config = super().get_config()
        config.update(version=self.version,
                      attacks=None if self.version == "standard" else
                      [serialize(a) for a in self.attacks])
        return config
