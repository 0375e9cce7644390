"""tfrobust.recipe: the model a table of options builds, and adding an objective in one file."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfrobust import attacks, objectives, recipe
from tfrobust import data as tfrobust_data
from tfrobust.cli.main import main
from tfrobust.models import RobustModel
from tfrobust.objectives.base import Hyperparameter, LossOutput, sparse_ce, weighted_mean
from tfrobust.tuning import RobustHyperModel, space


class MixedAT(objectives.Objective):
    """A throw-away framework: `gamma CE(f(x'), y) + (1 - gamma) CE(f(x), y)`."""

    term_names = ("clean_loss",)
    he_defaults = (12.0, 0.1)
    hyperparameters = (Hyperparameter("gamma", 0.5, help="weight of the adversarial loss",
                                      search=(0.0, 1.0)),)

    def __init__(self, gamma=0.5):
        self.gamma = float(gamma)

    def compute_loss(self, model, x, x_adv, y, sample_weight=None):
        z, z_adv = model.features(x, training=True), model.features(x_adv, training=True)
        clean = sparse_ce(model.use_logits(z, "loss", y), y)
        adv = sparse_ce(model.use_logits(z_adv, "loss", y), y)
        loss = weighted_mean(self.gamma * adv + (1 - self.gamma) * clean, sample_weight)
        return LossOutput(loss, {"clean_loss": tf.reduce_mean(clean)},
                          model.use_logits(z, "evaluation"),
                          model.use_logits(z_adv, "evaluation"))

    def get_config(self):
        return {"gamma": self.gamma}


@pytest.fixture
def mixed_at():
    """`MixedAT` registered as "mixed-at" for one test, then forgotten."""
    registry = objectives.base._REGISTRY
    cls = objectives.register("mixed-at")(MixedAT)
    yield cls
    del registry._classes["mixed-at"]
    keras.saving.get_custom_objects().pop("tfrobust>MixedAT", None)


def test_a_registered_objective_trains_from_the_cli_tunes_and_round_trips(mixed_at, tmp_path):
    """Registering the class is all it takes: --method, --gamma, HE defaults, tuning, .keras."""
    out = tmp_path / "run"
    status = main(["train", "--method", "mixed-at", "--gamma", "0.25", "--head", "hypersphere",
                   "--limit", "64", "--batch-size", "32", "--epochs", "1", "--num-steps", "1",
                   "--eval-num-steps", "2",
                   "--val-limit", "32", "--eval-limit", "32", "--output", str(out)])
    assert status == 0
    options = json.loads((out / "config.json").read_text())["options"]
    assert (options["method"], options["gamma"]) == ("mixed-at", 0.25)
    assert (options["scale"], options["margin"]) == (12.0, 0.1)  # its own HE defaults
    assert options["beta"] is None and options["replays"] is None
    history = json.loads((out / "history.json").read_text())["epochs"][0]
    assert np.isfinite(history["loss"]) and history["clean_loss"] > 0
    loaded = keras.saving.load_model(out / "model.keras")
    assert isinstance(loaded.objective, MixedAT) and loaded.objective.gamma == 0.25
    # The tuning space offers it, with its hyperparameter under the method.
    entries = space.entries_by_name()
    assert "mixed-at" in entries["method"].allowed
    assert entries["gamma"].parent == ("method", ("mixed-at",))
    assert entries["gamma"].values == (0.0, 1.0) and entries["gamma"].default == 0.5
    hypermodel = RobustHyperModel(fixed={"method": "mixed-at"}, search={"gamma": [0.1, 0.9]},
                                  search_defaults=False, num_steps=1)
    import keras_tuner as kt

    hp = kt.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    assert hp.values["gamma"] == pytest.approx(0.5)
    model = hypermodel.build(hp)
    assert isinstance(model.objective, MixedAT) and model.objective.gamma == pytest.approx(0.5)
    assert "clean_loss" in hypermodel.logged_metrics(validation=False)[0]


def test_the_throw_away_loss_is_its_formula(mixed_at):
    """gamma = 1 is PGD-AT's loss on the same batch; gamma = 0 is standard training's."""
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model = RobustModel(backbone, keras.layers.Dense(2), objective=mixed_at(1.0),
                        attack=attacks.PGD(epsilon=0.1, num_steps=1))
    x = np.random.default_rng(0).uniform(size=(8, 4)).astype("float32")
    x_adv = np.clip(x + 0.1, 0, 1)
    y = tf.constant([0, 1] * 4)
    pgd = objectives.PGDAT().compute_loss(model, x, x_adv, y).loss
    standard = objectives.Standard().compute_loss(model, x, None, y).loss
    assert float(mixed_at(1.0).compute_loss(model, x, x_adv, y).loss) == pytest.approx(float(pgd))
    assert float(mixed_at(0.0).compute_loss(model, x, x_adv, y).loss) == pytest.approx(
        float(standard))


# -- resolve -----------------------------------------------------------------------------------
def _resolved(**changes):
    return recipe.resolve({**recipe.defaults(), **changes})


def test_resolve_fills_each_methods_reference_values():
    assert _resolved(method="trades")["beta"] == 6.0
    assert _resolved(method="alp")["beta"] == 0.5
    assert _resolved(method="free-at")["replays"] == 4
    assert _resolved(method="fast-at")["step_ratio"] == 1.25
    pgd = _resolved()
    assert (pgd["beta"], pgd["replays"], pgd["step_ratio"]) == (None, None, None)
    he = {m: (o["scale"], o["margin"]) for m in recipe.methods()
          for o in [_resolved(method=m, head="hypersphere")]}
    assert he == {"pgd-at": (15.0, 0.2), "trades": (15.0, 0.2), "alp": (20.0, 0.3),
                  "free-at": (10.0, 0.2), "fast-at": (15.0, 0.2), "standard": (15.0, 0.2)}
    adr = _resolved(method="trades", adr=True, adr_weights="gc=0.5")
    assert adr["adr_weights"] == {"lc": 1.0, "gc": 0.5, "ls": 1.0, "gs": 0.0, "ce": 1.0}
    assert adr["adr_layer"] == "flatten"
    objective = recipe.build_objective(adr)
    assert (objective.base, objective.beta, objective.layer) == ("trades", 6.0, "flatten")
    assert [r.weight for r in objective.regularizers] == [1.0, 0.5, 1.0, 0.0, 1.0]


@pytest.mark.parametrize("changes,message", [
    ({"replays": 3}, "Expected replays only with method free-at. Received: replays=3 with "
                     "method='pgd-at'"),
    ({"method": "alp", "beta": -1.0}, "beta"),
    ({"method": "free-at", "replays": 0}, "replays"),
    ({"method": "nope"}, "Expected method in"),
    ({"method": "alp", "adr": True}, "Expected --adr with method pgd-at or trades"),
    ({"scale": 10.0}, "Expected --scale and --margin only with --head hypersphere"),
    ({"num_steps": 0}, "Expected num_steps >= 1 for method 'pgd-at'"),
    ({"base_width": 16}, "Expected --base-width only with model 'preact_resnet18'. Received: "
                         "base_width=16 with model='small_cnn'"),
    ({"model": "preact_resnet18", "base_width": 0}, "Expected base_width >= 1. Received: "
                                                    "base_width=0"),
])
def test_resolve_refuses_inconsistent_options(changes, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _resolved(**changes)


def test_base_width_narrows_preact_resnet18_from_the_options():
    assert _resolved(model="preact_resnet18")["base_width"] == 64
    assert _resolved()["base_width"] is None
    options = _resolved(model="preact_resnet18", base_width=8, epsilon=8 / 255)
    info = tfrobust_data.DatasetInfo("cifar-like", (32, 32, 3), 10, "arrays")
    model = recipe.build_model(options, info)
    assert model.backbone.output_shape == (None, 64)  # 8 x base_width
    assert model.backbone.get_layer("stem_conv").kernel.shape == (3, 3, 3, 8)


def test_fast_at_declares_its_guard_and_free_at_its_own_steps():
    from tfrobust.callbacks import CatastrophicOverfittingGuard

    assert [type(c) for c in objectives.FastAT().callbacks()] == [CatastrophicOverfittingGuard]
    assert objectives.PGDAT().callbacks() == []
    assert _resolved(method="free-at", num_steps=0)["num_steps"] == 0
    assert _resolved(method="fast-at", num_steps=0)["num_steps"] == 0


def test_the_library_does_not_import_the_cli():
    root = os.path.join(os.path.dirname(os.path.dirname(__file__)), "tfrobust")
    offenders = []
    for directory, _, files in os.walk(root):
        if os.path.basename(directory) == "cli":
            continue
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                with open(path) as handle:
                    text = handle.read()
                if "tfrobust.cli" in text.replace("tfrobust.cli.main import main", ""):
                    offenders.append(os.path.relpath(path, root))
    assert offenders == []
