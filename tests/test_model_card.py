"""The model card: RobustBench's fields from a report, closed-form cases without attacks."""

import json

import pytest

from tfrobust import attacks
from tfrobust.evaluation import EvaluationReport
from tfrobust.evaluation.checks import Check
from tfrobust.evaluation.model_card import model_card, report_card


def _report(members, epsilon=8 / 255, norm="linf", passed=True, model_file=None):
    model = {"name": "wrn", "class": "RobustModel", "parameters": 10, "weights_sha256": "x"}
    if model_file:
        model["file"] = model_file
    return EvaluationReport(
        model=model,
        data={"name": "/data/cifar10.npz", "split": "test", "num_examples": 200},
        threat_model={"norm": norm, "epsilon": epsilon, "clip_min": 0.0, "clip_max": 1.0},
        clean_accuracy=0.8512, robust_accuracy=0.5374,
        attacks=[{"name": m.registry_name, "config": attacks.serialize(m)} for m in members],
        broken_by=[], sweep={}, checks=[Check("deterministic", passed, "", "")],
        check_attacks={}, timings={}, units={}, provenance={})


def test_a_standard_autoattack_report_fills_the_leaderboard_fields():
    report = _report(attacks.AutoAttack(epsilon=8 / 255).attacks)
    card = model_card(report)
    assert (card["clean_acc"], card["robust_acc"], card["autoattack_acc"]) == (
        "85.12", "53.74", "53.74")
    assert (card["dataset"], card["threat_model"], card["eps"], card["n_examples"]) == (
        "cifar10", "Linf", "8/255", 200)
    assert card["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert card["number_forward_passes"] == 1 and card["unreliable"] is False
    assert card["architecture"] == "wrn" and card["additional_data"] is None
    assert all(card[key] is None for key in ("link", "name", "authors", "venue", "reported"))
    assert "autoattack_acc" in card["sources"] and "standard AutoAttack" in card[
        "sources"]["autoattack_acc"]


@pytest.mark.parametrize("members", [
    lambda: attacks.AutoAttack(epsilon=8 / 255).attacks[:3],                 # Square missing
    lambda: attacks.AutoAttack(epsilon=4 / 255).attacks,                     # another epsilon
    lambda: [attacks.APGDCE(epsilon=8 / 255, num_steps=20)],                 # fewer steps
])
def test_any_other_ensemble_is_not_called_autoattack(members):
    card = model_card(_report(members()))
    assert card["autoattack_acc"] is None and card["robust_acc"] == "53.74"


def test_epsilon_threat_model_and_failed_checks():
    card = model_card(_report([attacks.APGDCE(epsilon=0.3)], epsilon=0.3, passed=False))
    assert (card["eps"], card["unreliable"]) == ("0.3", True)
    # 0.2 is 51/255, but reads better as itself; 2/255 has no short decimal.
    assert model_card(_report([attacks.APGDCE(epsilon=0.2)], epsilon=0.2))["eps"] == "0.2"
    assert model_card(_report([attacks.APGDCE(epsilon=2 / 255)], epsilon=2 / 255))[
        "eps"] == "2/255"
    card = model_card(_report([attacks.APGDCE(epsilon=0.5, norm="l2")], epsilon=0.5,
                              norm="l2"))
    assert (card["threat_model"], card["eps"]) == ("L2", "0.5")


def test_the_training_config_beside_the_model_file_is_read(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"options": {"model": "wide_resnet", "depth": 28, "width": 10}}))
    card = report_card(_report(attacks.AutoAttack(epsilon=8 / 255).attacks,
                               model_file=str(tmp_path / "model.keras")))
    assert card["architecture"] == "WideResNet-28-10" and card["additional_data"] is False
    assert "config.json" in card["sources"]["architecture"]
