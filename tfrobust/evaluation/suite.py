"""The checks of `tfrobust.evaluate` as registered objects that measure and judge.

Each check declares the attacks it runs on the correctly classified points
(`attacks`; the progress line's plan is made from these), whether the clean pass
alone decides it (`early`: those are judged before any attack, as AutoAttack's
checks are, so a model that outputs probabilities is named at once), measures what it
needs through the evaluation's `Runner` (`measure`), and gives its verdict with
a pure function of `tfrobust.evaluation.checks` (`judge`). `run_checks` first
measures every enabled check, then judges them, so a verdict sees everything
the evaluation ran (the black-box check compares with every white-box attack,
the validity check counts every unit).

Adding a check is a class here, registered with `register`, and its judging
function in `checks`.
"""

import keras
import numpy as np
import tensorflow as tf

from tfrobust import attacks as attacks_lib
from tfrobust.evaluation import checks as checks_lib
from tfrobust.evaluation.inputs import BASE_STEPS, label
from tfrobust.evaluation.store import digest

MORE = 5                     # more_steps: 5x the steps; more_restarts: 5 restarts
CHECK_SQUARE_QUERIES = 1000  # black_box, when the ensemble has no gradient-free attack

_REGISTRY = {}  # name -> class, in registration order: the order of the report


def register(cls):
    """Class decorator: makes the check `cls` (by its `name`) available to `evaluate`."""
    if not cls.name or cls.name in _REGISTRY:
        raise ValueError(f"Expected a new check name. Received: name={cls.name!r}")
    _REGISTRY[cls.name] = cls
    return cls


def names():
    """The registered check names, in the order reports list them."""
    return tuple(_REGISTRY)


def get(name):
    """A new instance of the check registered as `name`."""
    if name not in _REGISTRY:
        raise ValueError(f"Expected a check name among {list(_REGISTRY)}. Received: name={name!r}")
    return _REGISTRY[name]()


class CheckContext:
    """What the checks read, and the one way they run attacks.

    Built after the clean pass; `ensemble`, `curves` and `grid` are set once
    the ensemble and the sweep have run (before any check measures).

    Attributes:
        runner: the evaluation's `Runner` (data, cache, validity counts).
        logits_fn: the logits attacks see.
        logits: (N, num_classes) the clean logits.
        members: the ensemble's attacks, in order.
        common: the threat model: `epsilon`, `norm`, `seed`, `clip_min`, `clip_max`.
        tolerance: slack of the checks that compare two attacks.
        base: PGD-20 at the threat model, the reference of several checks.
        ensemble: the ensemble's `attacks.EnsembleCounts`.
        curves, grid: the sweep's curves and budgets.
        used: the configs of the attacks the checks ran, by display name.
    """

    def __init__(self, runner, logits_fn, logits, members, common, tolerance):
        self.runner = runner
        self.logits_fn = logits_fn
        self.logits = logits
        self.members = members
        self.common = common
        self.tolerance = tolerance
        self.base = attacks_lib.PGD(num_steps=BASE_STEPS, **common)
        self.ensemble = self.curves = self.grid = None
        self.used = {}
        self._ran = {}  # key -> (attack, scale, fooled per correctly classified example)

    @staticmethod
    def key(attack, scale=None):
        """What identifies a check's attack run: the attack's config and the logits' scale."""
        return digest(attacks_lib.serialize(attack)), scale

    def run(self, attack, scale=None):
        """Run `attack` (on `scale` x the logits) on every correctly classified point, once."""
        key = self.key(attack, scale)
        if key not in self._ran:
            self.used[label(attack)] = attacks_lib.serialize(attack)
            fooled = self.runner.standalone(attack, scale)
            self._ran[key] = (attack, scale, fooled)
        return self._ran[key][2]

    def fooled(self, attack, scale=None):
        """Per correctly classified point, whether a run of `attack` broke it."""
        key = self.key(attack, scale)
        if key not in self._ran:
            raise KeyError(f"Expected {label(attack)} (scale {scale}) to have been run by a "
                           "check's measure(); declare it in the check's attacks().")
        return self._ran[key][2]

    def accuracy(self, attack, scale=None):
        """Robust accuracy under a run of `attack`, over all examples."""
        return self.runner.accuracy(self.fooled(attack, scale))

    def runs(self):
        """Every `(attack, scale, fooled)` the checks ran, in order."""
        return list(self._ran.values())

    @property
    def clean_accuracy(self):
        return float(np.mean(self.runner.correct))

    @property
    def robust_accuracy(self):
        return float(np.mean(self.ensemble.broken_by == -1))


class EvaluationCheck:
    """A check: the attacks it runs, what it measures, and its verdict.

    Subclasses set `name` and implement `judge`; those that run attacks list
    them in `attacks`, and those that measure something else override `measure`.
    """

    name = None
    early = False  # judged from the clean pass alone, so before the attacks

    def attacks(self, context):
        """The attacks this check runs on every correctly classified point, as
        `(attack, scale)` pairs (`scale`: None for the logits as they are).

        Each runs one unit per batch: these are the units the check declares
        (`planned_attacks` plans them for the progress line).
        """
        return []

    def measure(self, context):
        """Run what the check needs; returns what `judge` needs besides the attacks' runs."""
        for attack, scale in self.attacks(context):
            context.run(attack, scale)
        return None

    def judge(self, context, measured):
        """The `checks.Check` verdict, from `context` and what `measure` returned."""
        raise NotImplementedError


def planned_attacks(checks, context):
    """The `(attack, scale)` runs `checks` make together: one several of them run (PGD-20)
    runs once."""
    planned = {}
    for check in checks:
        for attack, scale in check.attacks(context):
            planned.setdefault(context.key(attack, scale), (attack, scale))
    return list(planned.values())


def run_checks(checks, context):
    """Measure every check in `checks`, then judge each; returns the `Check`s in order."""
    measured = [check.measure(context) for check in checks]
    return [check.judge(context, values) for check, values in zip(checks, measured)]


def white_box_members(members):
    """Indices of the ensemble's white-box members whose breaks count as white-box results.

    Those before the first gradient-free member: a later one only ran on the
    points the gradient-free attack left, so its breaks are not a white-box
    attack's standalone result.
    """
    free = [i for i, member in enumerate(members) if member.gradient_free]
    return [i for i, member in enumerate(members)
            if not member.gradient_free and (not free or i < free[0])]


def _skipped(name, why):
    return checks_lib.Check(name, None, f"skipped: {why}", "")


# -- the sweep -----------------------------------------------------------------------------
@register
class EpsilonZero(EvaluationCheck):
    name = "epsilon_zero"

    def judge(self, context, measured):
        return checks_lib.epsilon_zero(
            context.clean_accuracy, {c["name"]: c["accuracy"][0] for c in context.curves})


@register
class MonotoneInEpsilon(EvaluationCheck):
    name = "monotone_in_epsilon"

    def judge(self, context, measured):
        if not context.curves:
            return _skipped(self.name, "no sweep attacks")
        return checks_lib.monotone_in_epsilon(
            context.grid, {c["name"]: c["accuracy"] for c in context.curves}, context.tolerance)


@register
class LargeEpsilon(EvaluationCheck):
    name = "large_epsilon"

    def measure(self, context):
        """The share of examples labelled as the class predicted for the mid-range image."""
        runner, common = context.runner, context.common
        middle = np.full((1,) + runner.x.shape[1:], (common["clip_min"] + common["clip_max"]) / 2,
                         np.float32)
        middle_class = int(np.argmax(runner.logits(middle), -1)[0])
        return float(np.mean(runner.y == middle_class))

    def judge(self, context, bound):
        if not context.curves:
            return _skipped(self.name, "no sweep attacks")
        return checks_lib.large_epsilon(
            context.grid[-1], {c["name"]: c["accuracy"][-1] for c in context.curves}, bound,
            context.tolerance)


# -- stronger and weaker attacks than PGD-20 ----------------------------------------------------
class _VersusBase(EvaluationCheck):
    """PGD-20 against one other attack, judged by `judge_fn(base name, base accuracy,
    other name, other accuracy, tolerance)`."""

    judge_fn = None  # a staticmethod in subclasses

    def other(self, context):
        raise NotImplementedError

    def attacks(self, context):
        return [(context.base, None), (self.other(context), None)]

    def judge(self, context, measured):
        other = self.other(context)
        return self.judge_fn(label(context.base), context.accuracy(context.base),
                             label(other), context.accuracy(other), context.tolerance)


@register
class MoreSteps(_VersusBase):
    name = "more_steps"
    judge_fn = staticmethod(checks_lib.more_steps)

    def other(self, context):
        return attacks_lib.PGD(num_steps=MORE * BASE_STEPS, **context.common)


@register
class MoreRestarts(_VersusBase):
    name = "more_restarts"
    judge_fn = staticmethod(checks_lib.more_restarts)

    def other(self, context):
        return attacks_lib.PGD(num_steps=BASE_STEPS, num_restarts=MORE, **context.common)


@register
class SingleStep(_VersusBase):
    name = "single_step"
    judge_fn = staticmethod(checks_lib.single_step)

    def other(self, context):
        return attacks_lib.FGSM(**context.common)


@register
class BlackBox(EvaluationCheck):
    """Whether a gradient-free attack breaks points every white-box attack left.

    As AutoAttack judges Square (its `check_square_sr`): from what the
    ensemble's gradient-free members broke on the points its white-box members
    left, so nothing runs again. Without a gradient-free member, Square with
    `CHECK_SQUARE_QUERIES` queries runs on every correctly classified point.
    The white-box worst case joins the ensemble's white-box members
    (`white_box_members`) and every white-box attack the checks ran on the
    logits as they are (PGD-20, and PGD-100, PGD-20x5 and FGSM when their checks
    are enabled); the verdict compares its accuracy with the accuracy once the
    gradient-free attack's breaks are added.
    """

    name = "black_box"

    def free_members(self, context):
        return [i for i, member in enumerate(context.members) if member.gradient_free]

    def black_box_attack(self, context):
        free = self.free_members(context)
        if free:
            return context.members[free[0]]
        return attacks_lib.Square(num_queries=CHECK_SQUARE_QUERIES, **context.common)

    def attacks(self, context):
        if self.free_members(context):
            return [(context.base, None)]
        return [(context.base, None), (self.black_box_attack(context), None)]

    def judge(self, context, measured):
        runner = context.runner
        broken_by = context.ensemble.broken_by[runner.correct_index]
        white_box = np.isin(broken_by, white_box_members(context.members))
        for attack, scale, fooled in context.runs():
            if scale is None and not attack.gradient_free:
                white_box = white_box | fooled
        free = self.free_members(context)
        black_box = (np.isin(broken_by, free) if free
                     else context.fooled(self.black_box_attack(context)))
        return checks_lib.black_box(runner.accuracy(white_box),
                                    label(self.black_box_attack(context)),
                                    runner.accuracy(white_box | black_box), context.tolerance)


# -- the logits and the forward pass ---------------------------------------------------------
@register
class LogitScale(EvaluationCheck):
    name = "logit_scale"

    def scales(self, context):
        """Down to a unit spread (at least 10x) and up by at least 10x."""
        centred = context.logits - context.logits.mean(axis=1, keepdims=True)
        spread = float(centred.std()) or 1.0
        return min(0.1, 1.0 / spread), max(10.0, 10.0 / spread)

    def attacks(self, context):
        return [(context.base, None)] + [(context.base, s) for s in self.scales(context)]

    def judge(self, context, measured):
        scaled = {s: context.accuracy(context.base, s) for s in self.scales(context)}
        return checks_lib.logit_scale(label(context.base), context.robust_accuracy,
                                      context.accuracy(context.base), scaled, context.tolerance)


@register
class ZeroGradient(EvaluationCheck):
    name = "zero_gradient"
    early = True

    def measure(self, context):
        """How many correctly classified points have an all-zero input gradient."""
        runner = context.runner
        return _count_zero_gradients(context.logits_fn, runner.x[runner.correct_index],
                                     runner.y[runner.correct_index], runner.batch_size)

    def judge(self, context, num_zero):
        return checks_lib.zero_gradient(num_zero, len(context.runner.correct_index),
                                        context.tolerance)


@register
class OutputsAreLogits(EvaluationCheck):
    name = "outputs_are_logits"
    early = True

    def judge(self, context, measured):
        logits = context.logits
        rows = ((logits.min(axis=1) >= -1e-6) & (logits.max(axis=1) <= 1 + 1e-6)
                & (np.abs(logits.sum(axis=1) - 1) <= 1e-4))
        return checks_lib.outputs_are_logits(int(rows.sum()), len(rows))


@register
class Deterministic(EvaluationCheck):
    name = "deterministic"
    early = True

    def measure(self, context):
        """The logits of a second forward pass."""
        return context.runner.logits(context.runner.x)

    def judge(self, context, again):
        logits = context.logits
        scale = max(1.0, float(np.abs(logits).max()))
        return checks_lib.deterministic(
            float(np.abs(again - logits).max(initial=0.0)) / scale,
            int(np.sum(np.argmax(again, -1) != np.argmax(logits, -1))), len(logits))


@register
class ValidExamples(EvaluationCheck):
    name = "valid_examples"

    def judge(self, context, measured):
        validity = context.runner.validity
        violations = {name: {k: v for k, v in counts.items() if k != "checked"}
                      for name, counts in validity.items()}
        return checks_lib.valid_examples(violations,
                                         sum(c["checked"] for c in validity.values()))


def _count_zero_gradients(logits_fn, x, y, batch_size):
    @tf.function(reduce_retracing=True)
    def zero_rows(images, labels):
        with tf.GradientTape() as tape:
            tape.watch(images)
            loss = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(
                labels, logits_fn(images), from_logits=True))
        grad = tape.gradient(loss, images, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        flat = tf.reshape(grad, [tf.shape(images)[0], -1])
        return tf.reduce_sum(tf.cast(tf.reduce_all(tf.equal(flat, 0.0), axis=1), tf.int32))

    return int(sum(int(zero_rows(tf.constant(x[i:i + batch_size]),
                                 tf.constant(y[i:i + batch_size])))
                   for i in range(0, len(x), batch_size)))
