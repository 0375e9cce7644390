"""`.keras` round trips of every head, objective, attack and regulariser, in safe mode."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tfrobust import attacks, objectives
from tfrobust.layers import HypersphereDense
from tfrobust.models import RobustModel
from tfrobust.objectives import regularizers as R

EPS = 0.3


def tiny_backbone():
    """conv (stride 3) - batch norm - dense 8: cheap, with moving statistics and a named layer."""
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(4, 5, strides=3, activation="relu", name="conv")(inputs)  # (B, 8, 8, 4)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.Flatten()(h)
    return keras.Model(inputs, keras.layers.Dense(8, activation="relu", name="fc")(h))


def dense():
    return keras.layers.Dense(10, name="head")


def hypersphere(scale=15.0, margin=0.2):
    return HypersphereDense(10, scale=scale, margin=margin, name="head")


# (head, objective, training attack, evaluation attack): each objective, both heads, every
# registered attack in one role or the other, and every regulariser.
CASES = {
    "dense-pgd-at-default-eval": (
        dense, "pgd-at", attacks.PGD(EPS, num_steps=2), None),
    "he-pgd-at-l2-cw-restarts": (
        hypersphere, objectives.PGDAT(),
        attacks.PGD(1.5, norm="l2", num_steps=2, num_restarts=2, loss="cw", seed=3),
        attacks.APGDDLR(EPS, num_steps=3)),
    "dense-trades": (
        dense, objectives.TRADES(beta=3.0), attacks.PGD(0.2, num_steps=2),
        attacks.APGDCE(0.2, num_steps=3)),
    "he-alp-fgsm": (
        lambda: hypersphere(20.0, 0.3), objectives.ALP(beta=0.7), attacks.FGSM(EPS),
        attacks.FGSMRS(EPS)),
    "dense-free-at": (
        dense, objectives.FreeAT(replays=2), attacks.PGD(EPS, num_steps=2),
        attacks.APGDTargeted(EPS, num_steps=2, num_target_classes=3)),
    "he-fast-at": (
        lambda: hypersphere(10.0, 0.2), objectives.FastAT(step_ratio=1.0, random_start=False),
        attacks.FGSMRS(EPS), attacks.FAB(EPS, num_steps=3, num_target_classes=2)),
    "dense-standard-no-eval": (
        dense, objectives.Standard(), None, False),
    "he-standard-square-eval": (
        hypersphere, "standard", None, attacks.Square(EPS, num_queries=10, p_init=0.5)),
    "dense-adr-pgd-at-apgd": (
        dense,
        objectives.ADR("pgd-at", [R.LocalCompactness(0.5), R.GlobalCompactness(1.0),
                                  R.ConditionalEntropy(0.2)]),
        attacks.APGD(EPS, num_steps=2, loss="dlr"),
        attacks.AutoAttack(EPS, version="custom", attacks=[
            attacks.APGDCE(EPS, num_steps=2), attacks.Square(EPS, num_queries=5)])),
    "dense-pgd-at-apgd-t-autoattack": (
        dense, "pgd-at", attacks.APGDTargeted(EPS, num_steps=2, num_target_classes=2),
        attacks.AutoAttack(EPS)),
    "he-pgd-at-fab-train": (
        hypersphere, "pgd-at", attacks.FAB(EPS, num_steps=2, num_target_classes=2),
        attacks.Square(EPS, num_queries=5)),
    "dense-pgd-at-square-train": (
        dense, "pgd-at", attacks.Square(EPS, num_queries=4), attacks.FGSM(EPS)),
}

# The fresh-process case: ADR on TRADES at a named layer with the other regularisers.
FRESH_PROCESS_CASE = (
    lambda: hypersphere(15.0, 0.25),
    objectives.ADR("trades", [R.LocalSmoothness(1.0), R.GlobalSmoothness(0.5),
                              R.ConditionalEntropy(1.0)], layer="conv", beta=2.0),
    attacks.APGDTargeted(EPS, num_steps=2, num_target_classes=2),
    attacks.FAB(EPS, num_steps=3, num_target_classes=2))


def test_the_cases_cover_every_registered_objective_attack_and_regularizer():
    cases = [*CASES.values(), FRESH_PROCESS_CASE]
    used_objectives = [objectives.get(case[1]) for case in cases]
    used_attacks = [a for case in cases for a in case[2:] if a not in (None, False)]
    used_attacks += [m for a in used_attacks if isinstance(a, attacks.AutoAttack)
                     for m in a.attacks]
    used_regularizers = [r for o in used_objectives if isinstance(o, objectives.ADR)
                         for r in o.regularizers]
    assert {o.registry_name for o in used_objectives} == set(objectives.names())
    assert {a.registry_name for a in used_attacks} == set(attacks.names())
    assert {r.registry_name for r in used_regularizers} == set(R.names())
    assert {o.base for o in used_objectives if isinstance(o, objectives.ADR)} == {"pgd-at",
                                                                                  "trades"}


def trained(head, objective, attack, eval_attack, x, y, **kwargs):
    """A RobustModel after one optimizer step (so its optimizer state is saved too)."""
    keras.utils.set_random_seed(0)
    model = RobustModel(tiny_backbone(), head(), objective=fresh(objective),
                        attack=fresh(attack), eval_attack=fresh(eval_attack), **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    return model


def fresh(obj):
    """A new instance with the same config: objectives keep per-model state (ADR's layer tap)."""
    if obj is None or obj is False or isinstance(obj, str):
        return obj
    return type(obj).from_config(obj.get_config())


def as_json(config):
    return json.loads(json.dumps(config))


def assert_same_model(restored, model, x):
    assert isinstance(restored, RobustModel)
    np.testing.assert_array_equal(restored.predict(x, verbose=0), model.predict(x, verbose=0))
    # As written to the file (JSON: tuples become lists).
    assert as_json(restored.get_config()) == as_json(model.get_config())
    assert restored.objective.get_config() == model.objective.get_config()
    assert type(restored.objective) is type(model.objective)
    for name in ("attack", "eval_attack"):
        mine, theirs = getattr(model, name), getattr(restored, name)
        assert (theirs is None) == (mine is None)
        if mine is not None:
            assert type(theirs) is type(mine) and theirs.get_config() == mine.get_config()
    assert restored.head.get_config() == model.head.get_config()
    assert restored.optimizer.iterations.numpy() == model.optimizer.iterations.numpy() >= 1


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_configuration_round_trips_without_custom_objects(case, tmp_path, mnist_sample):
    x, y = mnist_sample[0][:16], mnist_sample[1][:16]
    model = trained(*CASES[case], x, y)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)  # safe_mode=True, no custom_objects
    assert_same_model(restored, model, x)
    if isinstance(model.head, HypersphereDense):
        assert (restored.head.scale, restored.head.margin) == (model.head.scale,
                                                               model.head.margin)
        # The HE logits of every use survive: cos for inference, s cos for attacks.
        z = restored.features(x[:4])
        np.testing.assert_allclose(restored.head_logits(z, kind="attack"),
                                   model.head.scale * restored.predict(x[:4], verbose=0),
                                   rtol=1e-6, atol=1e-6)


def test_a_loaded_model_trains_on_and_validates_with_its_attacks(tmp_path, mnist_sample):
    x, y = mnist_sample[0][:16], mnist_sample[1][:16]
    model = trained(*CASES["he-pgd-at-l2-cw-restarts"], x, y, attack_bn="training", seed=7)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.attack_bn == "training" and restored.seed == 7
    logs = restored.fit(x, y, batch_size=16, epochs=1, validation_data=(x, y), verbose=0).history
    assert restored.optimizer.iterations.numpy() == 2
    assert {"loss", "accuracy", "adv_accuracy", "val_accuracy", "val_adv_accuracy"} <= set(logs)
    assert all(np.isfinite(v[0]) for v in logs.values())


def test_a_mixed_precision_model_round_trips(tmp_path, mnist_sample):
    x, y = mnist_sample[0][:16], mnist_sample[1][:16]
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(0)
        model = RobustModel(tiny_backbone(), HypersphereDense(10, name="head", dtype="float32"),
                            attack=attacks.PGD(EPS, num_steps=2))
        model.compile(optimizer="adam")
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)
        path = os.path.join(tmp_path, "model.keras")
        model.save(path)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    # Loaded under the float32 policy: each layer keeps the policy it was saved with.
    restored = keras.saving.load_model(path)
    assert restored.backbone.get_layer("conv").dtype_policy.name == "mixed_bfloat16"
    assert restored.head.dtype_policy.name == "float32"
    assert_same_model(restored, model, x)


SUBPROCESS_LOAD = """
import sys
import keras, numpy as np
import tfrobust  # registers the classes; nothing else from the test process
model = keras.saving.load_model(sys.argv[1])  # safe_mode=True, no custom_objects
np.save(sys.argv[3], model.predict(np.load(sys.argv[2]), verbose=0))
print(type(model.objective).__name__, [type(r).__name__ for r in model.objective.regularizers],
      model.objective.layer, model.objective.beta, type(model.attack).__name__,
      model.attack.num_target_classes, type(model.eval_attack).__name__,
      model.head.scale, model.head.margin)
"""


def test_a_fresh_process_loads_the_model_with_only_tfrobust_imported(tmp_path, mnist_sample):
    x, y = mnist_sample[0][:16], mnist_sample[1][:16]
    model = trained(*FRESH_PROCESS_CASE, x, y)
    path, inputs, outputs = (os.path.join(tmp_path, name)
                             for name in ("model.keras", "x.npy", "predictions.npy"))
    model.save(path)
    np.save(inputs, x)
    result = subprocess.run([sys.executable, "-c", SUBPROCESS_LOAD, path, inputs, outputs],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == [
        "ADR", "['LocalSmoothness',", "'GlobalSmoothness',", "'ConditionalEntropy']", "conv",
        "2.0", "APGDTargeted", "2", "FAB", "15.0", "0.25"]
    np.testing.assert_array_equal(np.load(outputs), model.predict(x, verbose=0))
