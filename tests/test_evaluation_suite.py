"""The evaluator's registered checks: their order, the units each declares and runs, what the
attacks declare for them (gradient-free or not, their cost), and the report's attack names."""

import io

import numpy as np
import pytest

import tfrobust
from tfrobust import attacks
from tfrobust.evaluation import CHECKS, evaluator, inputs, suite
from tfrobust.evaluation.progress import Progress
from conftest import predicted, two_class_model

EPSILON = 0.1
BATCH = 5
# The attacks each check runs on the correctly classified points: PGD-20 (shared), PGD-100,
# PGD-20x5, FGSM, Square-1000 (no gradient-free attack in the ensemble below) and PGD-20 on
# the logits scaled down and up.
ATTACKS_RUN = {"more_steps": 2, "more_restarts": 2, "single_step": 2, "black_box": 2,
               "logit_scale": 3}


def test_checks_are_registered_in_the_report_order():
    assert CHECKS == suite.names() == (
        "epsilon_zero", "monotone_in_epsilon", "large_epsilon", "more_steps", "more_restarts",
        "single_step", "black_box", "logit_scale", "zero_gradient", "outputs_are_logits",
        "deterministic", "valid_examples")
    assert [type(suite.get(name)).__name__ for name in CHECKS[:4]] == [
        "EpsilonZero", "MonotoneInEpsilon", "LargeEpsilon", "MoreSteps"]
    with pytest.raises(ValueError, match="'nonsense'"):
        suite.get("nonsense")


class _Recording(Progress):
    """The evaluation's progress line, kept for the test (and written nowhere)."""

    made = []

    def __init__(self):
        super().__init__(stream=io.StringIO(), interactive=False)
        _Recording.made.append(self)


@pytest.fixture
def tiny_case():
    model = two_class_model(seed=1)
    x = np.random.default_rng(0).uniform(0.2, 0.8, size=(12, 2, 2, 1)).astype("float32")
    return model, (x, predicted(model, x))  # all 12 correct: 3 batches of at most 5


def _evaluate_counting(monkeypatch, model, data, checks):
    """The report, and the examples the progress line planned and saw done."""
    _Recording.made.clear()
    monkeypatch.setattr(evaluator, "Progress", _Recording)
    report = tfrobust.evaluate(model, data, epsilon=EPSILON, attacks=[attacks.FGSM(EPSILON)],
                               sweep_attacks=(), checks=checks, batch_size=BATCH, verbose=True)
    (progress,) = _Recording.made
    return report, sum(progress.planned.values()), sum(progress.done.values())


@pytest.mark.parametrize("name", CHECKS)
def test_each_check_runs_the_units_it_declares(name, tiny_case, monkeypatch):
    model, data = tiny_case
    report, planned, done = _evaluate_counting(monkeypatch, model, data, [name])
    examples, ensemble = 12, 12
    expected = examples * ATTACKS_RUN.get(name, 0)
    assert planned - ensemble == expected  # what the check declared
    assert done - ensemble == expected     # what it ran
    assert [c.name for c in report.checks] == [name]


def test_checks_together_run_a_shared_attack_once(tiny_case, monkeypatch):
    model, data = tiny_case
    report, planned, done = _evaluate_counting(monkeypatch, model, data, True)
    # The ensemble (1 attack) and 7 distinct check attacks, on the 12 examples each.
    assert planned == done == 12 * (1 + 7)
    assert list(report.check_attacks) == ["pgd-20", "pgd-100", "pgd-20x5", "fgsm",
                                          "square-1000"]
    assert report.check("valid_examples").numbers["checked"] == 12 * (1 + 7)


@pytest.mark.parametrize("name", attacks.names())
def test_attacks_declare_gradient_free_and_cost(name):
    attack = attacks.get(name, epsilon=0.1) if name != "autoattack" else attacks.AutoAttack(0.1)
    assert attack.gradient_free is (name == "square")
    expected_cost = {"square": 5000, "autoattack": None, "pgd": 10, "fgsm": 1, "fgsm-rs": 1}
    assert attack.cost == expected_cost.get(name, 100)


def test_labels_show_the_cost_where_the_attack_declares_it():
    common = {"epsilon": 0.1}
    assert [inputs.label(a) for a in (
        attacks.PGD(num_steps=20, **common), attacks.PGD(num_steps=20, num_restarts=5, **common),
        attacks.FGSM(**common), attacks.FGSMRS(**common), attacks.Square(num_queries=300, **common),
        attacks.Square(num_queries=300, num_restarts=2, **common), attacks.APGDCE(**common),
        attacks.APGDTargeted(**common), attacks.FAB(**common), attacks.APGD(loss="dlr", **common),
    )] == ["pgd-20", "pgd-20x5", "fgsm", "fgsm-rs", "square-300", "square-300x2", "apgd-ce",
           "apgd-t", "fab-t", "apgd"]


def test_white_box_members_stop_at_the_first_gradient_free_member():
    pgd, fgsm, square = attacks.PGD(0.1), attacks.FGSM(0.1), attacks.Square(0.1)
    assert suite.white_box_members([pgd, fgsm, square, pgd]) == [0, 1]
    assert suite.white_box_members([pgd, fgsm]) == [0, 1]
    assert suite.white_box_members([square, pgd]) == []


def test_the_default_sweep_stops_at_the_large_epsilon():
    """0 to 2x epsilon, budgets beyond the large epsilon (half the range in L-inf) dropped."""
    grid = inputs.sweep_grid(None, 0.3, "linf", 0.0, 1.0, (28, 28, 1))
    np.testing.assert_allclose(grid, [0.0, 0.075, 0.15, 0.225, 0.3, 0.45, 0.5])
    grid = inputs.sweep_grid(None, 0.1, "linf", 0.0, 1.0, (28, 28, 1))
    np.testing.assert_allclose(grid, [0.0, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.5])
    # L2: from anywhere in [0, 1]^784 the mid-range image is within 0.5 * sqrt(784) = 14.
    assert inputs.sweep_grid([1.0], 1.5, "l2", 0.0, 1.0, (28, 28, 1)) == [0.0, 1.0, 1.5, 14.0]


@pytest.mark.filterwarnings("ignore:.*from_logits=True.*:UserWarning")
def test_checks_the_clean_pass_decides_are_judged_before_any_attack(tiny_case, capsys):
    """A model that outputs probabilities is named before the first attack's line."""
    import keras

    model, data = tiny_case
    probabilities = keras.Sequential([keras.Input((2, 2, 1)), model, keras.layers.Softmax()])
    report = tfrobust.evaluate(probabilities, data, epsilon=EPSILON,
                               attacks=[attacks.FGSM(EPSILON)], sweep_attacks=(),
                               checks=["outputs_are_logits", "deterministic", "single_step"],
                               batch_size=BATCH, verbose=True)
    out = capsys.readouterr().out
    assert [suite.get(name).early for name in CHECKS] == [
        name in ("zero_gradient", "outputs_are_logits", "deterministic") for name in CHECKS]
    assert "check outputs_are_logits FAILED before any attack" in out
    assert "deterministic FAILED" not in out
    assert out.index("FAILED before any attack") < out.index("fgsm")
    assert [c.name for c in report.checks] == ["single_step", "outputs_are_logits",
                                               "deterministic"]
    assert [c.passed for c in report.checks][1:] == [False, True]


def test_black_box_reads_squares_finds_in_the_ensemble(tiny_case, monkeypatch):
    """With Square in the ensemble the check runs no Square of its own (only PGD-20, for the
    white-box worst case): Square's finds after FGSM are added to the white-box breaks."""
    model, data = tiny_case
    _Recording.made.clear()
    monkeypatch.setattr(evaluator, "Progress", _Recording)
    members = [attacks.FGSM(EPSILON), attacks.Square(EPSILON, num_queries=50)]
    report = tfrobust.evaluate(model, data, epsilon=EPSILON, attacks=members, sweep_attacks=(),
                               checks=["black_box"], batch_size=BATCH, verbose=True)
    assert list(report.check_attacks) == ["pgd-20"]
    (progress,) = _Recording.made
    assert set(progress.planned) == {"fgsm", "square-50", "check pgd-20"}
    numbers = report.check("black_box").numbers
    square_broke = report.attacks[1]["broken"] / 12
    # white-box worst case W (FGSM and PGD-20) and the same with Square's finds S added:
    # W u S is at least the ensemble's breaks (FGSM u S) and at most W plus S.
    assert numbers["white_box_accuracy"] - square_broke <= numbers["square-50"]
    assert numbers["square-50"] <= min(numbers["white_box_accuracy"], report.robust_accuracy)
