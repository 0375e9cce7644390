"""The checks that catch gradient masking and broken evaluations (SPEC section 5).

Each check is a pure function of numbers the evaluation measured, returning a
`Check`: pass or fail (or `None` when it could not be run), the numbers behind
the verdict, and one sentence of what a failure means. `tfrobust.evaluate`
measures the numbers and calls these.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass
class Check:
    """The verdict of one check.

    Attributes:
        name: the check's identifier, e.g. `"black_box"`.
        passed: True, False, or None if the check was skipped.
        summary: one line with the numbers behind the verdict.
        meaning: one sentence: what the check guards against, and what a
            failure says about the robust accuracy.
        numbers: the measured values, JSON-serialisable.
    """

    name: str
    passed: object
    summary: str
    meaning: str
    numbers: dict = dataclasses.field(default_factory=dict)

    @property
    def status(self):
        return {True: "PASS", False: "FAIL", None: "SKIP"}[self.passed]


def _pct(value):
    return f"{100 * value:.1f}%"


def epsilon_zero(clean_accuracy, accuracy_at_zero):
    """Accuracy under each attack at epsilon 0 equals the clean accuracy.

    Args:
        clean_accuracy: accuracy on the clean inputs.
        accuracy_at_zero: `{attack name: accuracy at epsilon 0}`.
    """
    meaning = ("An attack with no budget cannot change a prediction; a difference means the "
               "forward pass is random or the attack leaves the threat model.")
    if not accuracy_at_zero:
        return Check("epsilon_zero", None, "no attack was run at epsilon 0", meaning)
    differ = {k: v for k, v in accuracy_at_zero.items() if v != clean_accuracy}
    parts = ", ".join(f"{k} {_pct(v)}" for k, v in accuracy_at_zero.items())
    return Check("epsilon_zero", not differ,
                 f"clean {_pct(clean_accuracy)}; at epsilon 0: {parts}", meaning,
                 {"clean_accuracy": clean_accuracy, "accuracy_at_zero": accuracy_at_zero})


def monotone_in_epsilon(epsilons, curves, tolerance):
    """Robust accuracy does not rise with epsilon (beyond `tolerance`).

    Args:
        epsilons: increasing budgets.
        curves: `{attack name: accuracies at epsilons}`.
        tolerance: allowed rise between consecutive budgets (attack randomness).
    """
    meaning = ("A larger ball contains the smaller one, so accuracy can only fall as epsilon "
               "grows; a rise means the attack fails to find points it found before.")
    rises = {}
    for name, accuracy in curves.items():
        steps = np.diff(np.asarray(accuracy, dtype=float))
        rises[name] = float(max(steps.max(initial=0.0), 0.0))
    worst = max(rises, key=rises.get)
    passed = rises[worst] <= tolerance
    return Check("monotone_in_epsilon", passed,
                 f"largest rise {_pct(rises[worst])} ({worst}); tolerance {_pct(tolerance)}",
                 meaning, {"epsilons": list(epsilons), "largest_rise": rises,
                           "tolerance": tolerance})


def large_epsilon(epsilon, accuracies, bound, tolerance):
    """At a budget that reaches the mid-range image from every input, accuracy is near 0.

    Args:
        epsilon: the large budget.
        accuracies: `{attack name: accuracy at epsilon}`.
        bound: the share of examples whose label is the class the model
            predicts for the mid-range image: what a successful attack leaves.
        tolerance: slack above the bound.
    """
    meaning = (f"At epsilon {epsilon:g} every input can be moved to the mid-grey image, so a "
               "working attack leaves at most the examples of the class predicted there; more "
               "means the gradients do not lead the attack anywhere.")
    best = min(accuracies, key=accuracies.get)
    passed = accuracies[best] <= bound + tolerance
    return Check("large_epsilon", passed,
                 f"{best} {_pct(accuracies[best])} at epsilon {epsilon:g}; bound "
                 f"{_pct(bound)} + tolerance {_pct(tolerance)}", meaning,
                 {"epsilon": epsilon, "accuracy": accuracies, "bound": bound,
                  "tolerance": tolerance})


def _stronger_not_weaker(name, base_name, base, stronger_name, stronger, tolerance, meaning):
    passed = stronger <= base + tolerance
    return Check(name, passed,
                 f"{stronger_name} {_pct(stronger)} vs {base_name} {_pct(base)}; "
                 f"tolerance {_pct(tolerance)}", meaning,
                 {base_name: base, stronger_name: stronger, "tolerance": tolerance})


def more_steps(base_name, base, stronger_name, stronger, tolerance):
    """More iterations of the same attack never raise robust accuracy."""
    return _stronger_not_weaker(
        "more_steps", base_name, base, stronger_name, stronger, tolerance,
        "Running the same attack longer can only find more; if it finds fewer, the loss "
        "surface is erratic (noisy or shattered gradients).")


def more_restarts(base_name, base, stronger_name, stronger, tolerance):
    """More random restarts never raise robust accuracy."""
    return _stronger_not_weaker(
        "more_restarts", base_name, base, stronger_name, stronger, tolerance,
        "Restarts keep the best of several runs and can only find more; if they find fewer, "
        "the attack's outcome is dominated by randomness.")


def single_step(pgd_name, pgd, fgsm_name, fgsm, tolerance):
    """A single-step attack does not beat the iterative one."""
    passed = fgsm >= pgd - tolerance
    return Check("single_step", passed,
                 f"{fgsm_name} {_pct(fgsm)} vs {pgd_name} {_pct(pgd)}; tolerance "
                 f"{_pct(tolerance)}",
                 "One gradient step should not find more than many; if it does, the iterative "
                 "attack is stuck where the local gradient is uninformative (gradient masking).",
                 {pgd_name: pgd, fgsm_name: fgsm, "tolerance": tolerance})


def black_box(white_box_accuracy, square_name, combined_accuracy, tolerance):
    """A black-box attack does not break what the white-box attacks left.

    Args:
        white_box_accuracy: per-example worst case over the white-box attacks.
        combined_accuracy: the same once the points the query-based attack
            broke are added (AutoAttack's check on Square after its white-box attacks).
    """
    passed = combined_accuracy >= white_box_accuracy - tolerance
    return Check("black_box", passed,
                 f"white-box worst case {_pct(white_box_accuracy)}, with {square_name}'s "
                 f"breaks added {_pct(combined_accuracy)}; tolerance {_pct(tolerance)}",
                 "Attacks that see the gradients should find at least what random search "
                 "finds; if not, the gradients are masked and white-box numbers overstate "
                 "robustness.",
                 {"white_box_accuracy": white_box_accuracy, square_name: combined_accuracy,
                  "tolerance": tolerance})


def logit_scale(attack_name, robust_accuracy, accuracy, scaled_accuracy, tolerance):
    """Multiplying the logits by a constant does not reveal points the evaluation missed.

    Args:
        attack_name: the cross-entropy attack run on scaled copies of the logits.
        robust_accuracy: the evaluation's robust accuracy (the ensemble's worst case).
        accuracy: the attack's robust accuracy on the logits as they are.
        scaled_accuracy: `{scale: its robust accuracy on logits * scale}`.
        tolerance: allowed shortfall.

    Scaling changes no prediction, so an evaluation whose answer depends on it
    was held back by the softmax: saturated (zero cross-entropy gradients) or
    flat. The verdict compares the scaled attacks with the evaluation's own
    result rather than with the unscaled attack, because cross-entropy's
    strength moves with the scale on honest models too (a sharper softmax
    focuses the gradient on the runner-up class): on a PGD-AT MNIST net PGD-20
    found 40% at scale 1, 44% at 0.1 and 35% at 10, while the scale-free
    ensemble found 32%. An evaluation of cross-entropy attacks alone is
    flagged for the points they miss; one with scale-free attacks (DLR,
    Square) passes.
    """
    worst = min(scaled_accuracy, key=scaled_accuracy.get)
    passed = scaled_accuracy[worst] >= robust_accuracy - tolerance
    parts = ", ".join(f"x {scale:.3g}: {_pct(value)}" for scale, value in scaled_accuracy.items())
    return Check("logit_scale", passed,
                 f"{attack_name} on logits x 1: {_pct(accuracy)}, {parts}; evaluation "
                 f"{_pct(robust_accuracy)}; tolerance {_pct(tolerance)}",
                 "Scaling the logits changes no prediction, so it cannot make the model less "
                 "robust; if it lets an attack find points the evaluation missed, the softmax "
                 "hid the gradients from the evaluation's attacks.",
                 {"robust_accuracy": robust_accuracy, "accuracy": accuracy,
                  "scaled_accuracy": {f"{k:.6g}": v for k, v in scaled_accuracy.items()},
                  "tolerance": tolerance})


def zero_gradient(num_zero, num_points, tolerance):
    """Few correctly classified points have an exactly zero input gradient."""
    share = num_zero / num_points if num_points else 0.0
    return Check("zero_gradient", share <= tolerance,
                 f"{num_zero} of {num_points} correctly classified points ({_pct(share)}) have "
                 f"a zero cross-entropy input gradient; tolerance {_pct(tolerance)}",
                 "A zero gradient gives a gradient attack no direction to move in; many of "
                 "them mean white-box attacks cannot work on this model as it is.",
                 {"num_zero": num_zero, "num_points": num_points, "share": share,
                  "tolerance": tolerance})


def outputs_are_logits(num_probability_rows, num_rows):
    """The model outputs logits, not probabilities."""
    looks = num_rows > 0 and num_probability_rows == num_rows
    return Check("outputs_are_logits", not looks,
                 f"{num_probability_rows} of {num_rows} output rows are in [0, 1] and sum "
                 "to 1",
                 "Attack losses apply a softmax themselves; on probabilities they apply it twice "
                 "and the gradients nearly vanish; evaluate the logits instead.",
                 {"probability_rows": num_probability_rows, "rows": num_rows})


def deterministic(max_difference, num_changed, num_points):
    """Two forward passes on the same inputs agree."""
    passed = num_changed == 0 and max_difference <= 1e-5
    return Check("deterministic", passed,
                 f"largest logit difference between two passes {max_difference:.3g} (relative); "
                 f"{num_changed} of {num_points} predictions changed",
                 "A random forward pass turns every gradient into a noisy estimate and makes "
                 "single evaluations look robust; attack the expectation (EOT) instead.",
                 {"max_difference": max_difference, "changed_predictions": num_changed,
                  "points": num_points})


def valid_examples(violations, num_checked):
    """Every adversarial example is within epsilon, inside the valid range and finite.

    Args:
        violations: `{attack name: {"outside_ball": n, "outside_range": n,
            "not_finite": n}}` counts of offending points.
        num_checked: adversarial examples checked in all.
    """
    bad = {name: counts for name, counts in violations.items() if any(counts.values())}
    summary = (f"all {num_checked} adversarial examples valid" if not bad else
               "; ".join(f"{name}: " + ", ".join(f"{v} {k.replace('_', ' ')}"
                                                 for k, v in counts.items() if v)
                         for name, counts in bad.items()))
    return Check("valid_examples", not bad, summary,
                 "A point outside the ball or the pixel range answers a different question; "
                 "its success does not count against the model.",
                 {"violations": violations, "checked": num_checked})
