"""The checks as functions of measured numbers: each verdict on hand-made inputs."""

import pytest

from tfrobust.evaluation import checks


def test_epsilon_zero_needs_exact_equality():
    assert checks.epsilon_zero(0.9, {"pgd-20": 0.9, "apgd-dlr": 0.9}).passed
    failed = checks.epsilon_zero(0.9, {"pgd-20": 0.9, "apgd-dlr": 0.89})
    assert failed.passed is False and failed.numbers["accuracy_at_zero"]["apgd-dlr"] == 0.89
    assert checks.epsilon_zero(0.9, {}).passed is None


def test_monotone_in_epsilon_measures_the_largest_rise():
    check = checks.monotone_in_epsilon([0, 0.1, 0.2, 0.3], {"a": [0.9, 0.5, 0.53, 0.2],
                                                            "b": [0.9, 0.6, 0.4, 0.1]}, 0.02)
    assert check.passed is False
    assert check.numbers["largest_rise"] == {"a": pytest.approx(0.03), "b": 0.0}
    assert checks.monotone_in_epsilon([0, 1], {"a": [0.9, 0.91]}, 0.02).passed


def test_large_epsilon_compares_the_best_attack_with_the_bound():
    assert checks.large_epsilon(0.5, {"a": 0.3, "b": 0.11}, bound=0.1, tolerance=0.02).passed
    assert checks.large_epsilon(0.5, {"a": 0.3, "b": 0.13}, bound=0.1,
                                tolerance=0.02).passed is False


def test_stronger_attacks_may_not_lose_more_than_the_tolerance():
    assert checks.more_steps("pgd-20", 0.50, "pgd-100", 0.515, 0.02).passed
    assert checks.more_steps("pgd-20", 0.50, "pgd-100", 0.53, 0.02).passed is False
    assert checks.more_restarts("pgd-20", 0.50, "pgd-20x5", 0.53, 0.02).passed is False
    assert checks.single_step("pgd-20", 0.50, "fgsm", 0.49, 0.02).passed
    assert checks.single_step("pgd-20", 0.50, "fgsm", 0.47, 0.02).passed is False
    assert checks.black_box(0.50, "square", 0.48, 0.02).passed
    assert checks.black_box(0.50, "square", 0.40, 0.02).passed is False


def test_logit_scale_compares_scaled_attacks_with_the_evaluation():
    # Scaling that moves cross-entropy but stays above the ensemble's result passes...
    assert checks.logit_scale("pgd-20", 0.32, 0.40, {0.1: 0.44, 10.0: 0.35}, 0.02).passed
    # ...a scale at which cross-entropy finds what the evaluation missed fails.
    check = checks.logit_scale("pgd-20", 0.95, 0.95, {1e-4: 0.01, 10.0: 0.95}, 0.02)
    assert check.passed is False and check.numbers["scaled_accuracy"]["0.0001"] == 0.01


def test_zero_gradient_logits_determinism_and_validity():
    assert checks.zero_gradient(2, 100, 0.02).passed
    assert checks.zero_gradient(3, 100, 0.02).passed is False
    assert checks.outputs_are_logits(99, 100).passed
    assert checks.outputs_are_logits(100, 100).passed is False
    assert checks.deterministic(0.0, 0, 10).passed
    assert checks.deterministic(1e-3, 0, 10).passed is False
    assert checks.deterministic(0.0, 1, 10).passed is False
    ok = {"pgd-20": {"outside_ball": 0, "outside_range": 0, "not_finite": 0}}
    assert checks.valid_examples(ok, 50).passed
    bad = {"x": {"outside_ball": 0, "outside_range": 2, "not_finite": 1}}
    check = checks.valid_examples({**ok, **bad}, 60)
    assert check.passed is False and "2 outside range" in check.summary
