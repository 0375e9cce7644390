"""`tfrobust.evaluate` on small real MNIST models: planted evaluation failures are caught, an
honest PGD-AT model passes, the report round-trips through JSON and PNG, runs resume."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfrobust
from tfrobust import attacks, models
from tfrobust.evaluation import EvaluationReport, plot_report

EPSILON = 0.2
NUM_TEST = 100


@pytest.fixture(scope="module")
def trained(trained_two_conv_net, mnist_sample):
    """conftest's standard and PGD-AT two_conv_net (3,000 training digits), and 100 test digits."""
    return (trained_two_conv_net["standard"], trained_two_conv_net["pgd-at"],
            (mnist_sample[2][:NUM_TEST], mnist_sample[3][:NUM_TEST]))


def _small_ensemble():
    """AutoAttack's kinds of attack (CE, targeted DLR, query-based), with fewer iterations."""
    return [attacks.APGDCE(epsilon=EPSILON, num_steps=20),
            attacks.APGDTargeted(epsilon=EPSILON, num_steps=20, num_target_classes=3),
            attacks.Square(epsilon=EPSILON, num_queries=300)]


def _evaluate(model, data, **kwargs):
    kwargs.setdefault("sweep_attacks", ("pgd",))
    kwargs.setdefault("attacks", _small_ensemble())
    return tfrobust.evaluate(model, data, epsilon=EPSILON, verbose=False, **kwargs)


def _failed(report):
    return {check.name for check in report.failed_checks}


class Quantize(keras.layers.Layer):
    """Rounds pixels to `levels` steps: no gradient passes (shattered gradients)."""

    def __init__(self, levels=8, **kwargs):
        super().__init__(**kwargs)
        self.levels = levels

    def call(self, x):
        return tf.round(x * self.levels) / self.levels


class AlwaysNoisy(keras.layers.Layer):
    """Gaussian noise at inference too: a randomised forward pass."""

    def call(self, x):
        return x + tf.random.normal(tf.shape(x), stddev=0.3)


def _wrap(*layers):
    model = keras.Sequential([keras.Input((28, 28, 1)), *layers])
    model(np.zeros((1, 28, 28, 1), "float32"))
    return model


def test_saturated_logits_are_caught(trained):
    standard, _, data = trained
    saturated = _wrap(standard, keras.layers.Rescaling(1e4))
    # A cross-entropy-only evaluation (the mistake), with a DLR sweep beside PGD.
    # Only the checks asserted here run (the honest model below runs them all).
    report = tfrobust.evaluate(
        saturated, data, epsilon=EPSILON, verbose=False,
        checks=["zero_gradient", "logit_scale", "black_box"], epsilons=(EPSILON,),
        attacks=[attacks.APGDCE(epsilon=EPSILON, num_steps=20)],
        sweep_attacks=("pgd", attacks.APGD(epsilon=EPSILON, loss="dlr", num_steps=25)))
    assert {"zero_gradient", "logit_scale", "black_box"} <= _failed(report)
    assert report.check("zero_gradient").numbers["share"] > 0.5
    # Cross-entropy PGD sees no gradient; the scale-free DLR loss and Square do.
    at_epsilon = report.sweep["epsilons"].index(EPSILON)
    pgd, dlr = (curve["accuracy"][at_epsilon] for curve in report.sweep["curves"])
    assert pgd > dlr + 0.3
    numbers = report.check("black_box").numbers
    assert numbers["square-1000"] < numbers["white_box_accuracy"] - 0.3
    assert min(report.check("logit_scale").numbers["scaled_accuracy"].values()) < \
        report.robust_accuracy - 0.3


def test_shattered_gradients_are_caught(trained):
    standard, _, data = trained
    # A white-box attack and Square are all these two checks need (no sweep).
    report = _evaluate(_wrap(Quantize(8), standard), data, checks=["black_box", "zero_gradient"],
                       attacks=[attacks.APGDCE(epsilon=EPSILON, num_steps=20),
                                attacks.Square(epsilon=EPSILON, num_queries=300)],
                       sweep_attacks=())
    assert "black_box" in _failed(report)
    numbers = report.check("black_box").numbers
    assert numbers["square-300"] < numbers["white_box_accuracy"] - 0.3
    assert report.check("zero_gradient").numbers["share"] == 1.0
    # Square breaks what the white-box attacks could not.
    assert report.attacks[-1]["broken"] > report.attacks[0]["broken"]


@pytest.mark.filterwarnings("ignore:.*from_logits=True.*:UserWarning")
def test_probabilities_are_caught(trained):
    standard, _, data = trained
    # The check looks at the outputs alone: one short attack, no sweep.
    report = _evaluate(_wrap(standard, keras.layers.Softmax()), data,
                       checks=["outputs_are_logits"], sweep_attacks=(),
                       attacks=[attacks.PGD(epsilon=EPSILON, num_steps=5)])
    assert "outputs_are_logits" in _failed(report)
    assert (f"1 of {len(tfrobust.evaluation.CHECKS)} checks ran, 1 FAILED: outputs_are_logits"
            in report.summary())
    assert report.check("outputs_are_logits").numbers["probability_rows"] == NUM_TEST


def test_random_forward_pass_is_caught(trained):
    standard, _, data = trained
    # Both checks need forward passes only: one short attack, the sweep at 0, epsilon
    # and the large epsilon (always added).
    report = _evaluate(_wrap(AlwaysNoisy(), standard), data,
                       checks=["deterministic", "epsilon_zero"], epsilons=(EPSILON,),
                       attacks=[attacks.PGD(epsilon=EPSILON, num_steps=5)])
    assert {"deterministic", "epsilon_zero"} <= _failed(report)
    assert report.check("deterministic").numbers["changed_predictions"] > 0


def test_honest_pgd_at_model_passes_every_check(trained):
    _, robust, data = trained
    report = _evaluate(robust, data, sweep_attacks=(
        "pgd", attacks.APGD(epsilon=EPSILON, loss="dlr", num_steps=25)))
    assert report.passed, report.summary()
    assert len(report.checks) == len(tfrobust.evaluation.CHECKS)
    assert report.check_attacks["pgd-100"]["config"]["num_steps"] == 100
    assert report.check_attacks["pgd-20x5"]["config"]["num_restarts"] == 5
    # The numbers are consistent with each other.
    assert 0.2 < report.robust_accuracy < report.clean_accuracy
    assert report.robust_accuracy == pytest.approx(report.attacks[-1]["robust_accuracy_after"])
    broken = [b for b in report.broken_by if b not in ("robust", "misclassified")]
    assert len(broken) == sum(a["broken"] for a in report.attacks)
    assert report.broken_by.count("robust") == round(report.robust_accuracy * NUM_TEST)
    at_epsilon = report.sweep["epsilons"].index(EPSILON)
    for curve in report.sweep["curves"]:
        assert curve["accuracy"][0] == report.clean_accuracy
        assert curve["accuracy"][at_epsilon] >= report.robust_accuracy


def test_report_round_trips_through_json_and_png(trained, tmp_path):
    _, robust, data = trained
    report = _evaluate(robust, data, checks=["epsilon_zero", "valid_examples"],
                       epsilons=(EPSILON / 2, EPSILON))
    paths = report.save(tmp_path)
    assert sorted(os.path.basename(p) for p in paths) == ["model_card.json", "report.json",
                                                          "report.png"]
    umask = os.umask(0)
    os.umask(umask)
    assert all(os.stat(p).st_mode & 0o777 == 0o666 & ~umask for p in paths)
    loaded = EvaluationReport.load(tmp_path)
    assert loaded.to_dict() == json.loads(json.dumps(report.to_dict()))
    raw = json.loads((tmp_path / "report.json").read_text())
    assert raw["model"]["weights_sha256"] == report.model["weights_sha256"]
    assert raw["data"]["num_examples"] == NUM_TEST and len(raw["broken_by"]) == NUM_TEST
    assert [a["config"]["config"]["epsilon"] for a in raw["attacks"]] == [EPSILON] * 3
    assert raw["provenance"]["tfrobust_version"] == tfrobust.__version__
    # The model card: RobustBench's fields from the report, and what it cannot know left null.
    card = json.loads((tmp_path / "model_card.json").read_text())
    assert card["clean_acc"] == f"{100 * raw['clean_accuracy']:.2f}"
    assert card["robust_acc"] == f"{100 * raw['robust_accuracy']:.2f}"
    assert card["autoattack_acc"] is None  # a custom ensemble, named in "attacks"
    assert card["attacks"] == [a["name"] for a in raw["attacks"]]
    assert (card["threat_model"], card["eps"], card["n_examples"]) == ("Linf", "0.2", NUM_TEST)
    assert card["number_forward_passes"] == 1 and card["unreliable"] is False
    assert card["link"] is None and card["additional_data"] is None  # no config.json here
    # The PNG decodes, and its curves are the JSON's numbers.
    image = tf.io.decode_png(tf.io.read_file(str(tmp_path / "report.png"))).numpy()
    assert image.shape == (576, 960, 4) and image.std() > 10
    figure = plot_report(loaded)
    lines = {line.get_gid(): line for line in figure.axes[0].get_lines() if line.get_gid()}
    eps = raw["sweep"]["epsilons"]
    for curve in raw["sweep"]["curves"]:
        shown = lines[f"sweep:{curve['name']}"]
        near = [i for i, e in enumerate(eps) if e <= 2 * EPSILON + 1e-12]
        np.testing.assert_allclose(shown.get_xdata(), [eps[i] for i in near])
        np.testing.assert_allclose(shown.get_ydata(), [100 * curve["accuracy"][i] for i in near])
    np.testing.assert_allclose(lines["clean"].get_ydata(), [100 * raw["clean_accuracy"]] * 2)
    np.testing.assert_allclose(lines["worst_case"].get_ydata(), [100 * raw["robust_accuracy"]])
    # Every mark is in the legend, and the legend sits below the panels, over no curve.
    legend = figure.axes[0].get_legend()
    labels = [text.get_text() for text in legend.get_texts()]
    assert len(labels) == len(lines) == len(raw["sweep"]["curves"]) + 4
    assert f"evaluation epsilon {EPSILON:g}" in labels and "clean accuracy at epsilon 0" in labels
    figure.canvas.draw()
    box = legend.get_window_extent()
    assert all(box.y1 < ax.get_window_extent().y0 for ax in figure.axes)
    # The title and the summary say how many of the checks ran.
    ran = f"2 of {len(tfrobust.evaluation.CHECKS)} checks ran, all passed"
    assert ran in figure.axes[0].get_title() and f"checks: {ran}" in report.summary()


def test_interrupted_evaluation_resumes_without_recomputing(trained, tmp_path, monkeypatch):
    _, robust, data = trained
    options = {"checks": ["epsilon_zero", "single_step"], "batch_size": 40, "epsilons": (EPSILON,),
               "attacks": [attacks.APGDCE(epsilon=EPSILON, num_steps=10)]}
    uninterrupted = _evaluate(robust, data, **options)
    total = uninterrupted.units["computed"]

    calls = {"n": 0}
    original = attacks.Attack.__call__

    def interrupting(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(attacks.Attack, "__call__", interrupting)
    with pytest.raises(KeyboardInterrupt):
        _evaluate(robust, data, cache_dir=str(tmp_path), **options)
    monkeypatch.setattr(attacks.Attack, "__call__", original)
    finished = len([f for f in os.listdir(tmp_path) if f.endswith(".npz")])
    assert finished == 5 and not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]

    resumed = _evaluate(robust, data, cache_dir=str(tmp_path), **options)
    assert resumed.units == {"computed": total - 5, "reused": 5}
    for key in ("clean_accuracy", "robust_accuracy", "broken_by", "sweep"):
        assert getattr(resumed, key) == getattr(uninterrupted, key)
    assert [c.numbers for c in resumed.checks] == [c.numbers for c in uninterrupted.checks]
    again = _evaluate(robust, data, cache_dir=str(tmp_path), **options)
    assert again.units == {"computed": 0, "reused": total}


def test_robust_model_is_attacked_through_its_attack_logits(mnist_sample):
    """A hypersphere head is attacked on s * cos (what HE papers evaluate), not on cos."""
    x_train, y_train, x_test, y_test = mnist_sample
    keras.utils.set_random_seed(0)
    head = tfrobust.layers.HypersphereDense(10, scale=15.0, margin=0.2)
    model = models.RobustModel(models.small_cnn(input_shape=(28, 28, 1)), head,
                               objective="standard",
                               eval_attack=attacks.PGD(epsilon=0.1, num_steps=5))
    model.compile(optimizer="adam")
    model.fit(x_train[:512], y_train[:512], batch_size=128, epochs=1, verbose=0)
    report = tfrobust.evaluate(model, (x_test[:64], y_test[:64]), attacks="pgd",
                               sweep_attacks=(), checks=["outputs_are_logits"], verbose=False)
    # epsilon and norm come from the model's evaluation attack.
    assert report.threat_model["epsilon"] == 0.1 and report.threat_model["norm"] == "linf"
    cos = model.predict(x_test[:64], verbose=0)
    assert np.abs(cos).max() <= 1.0 + 1e-5
    assert report.check("outputs_are_logits").passed
    assert report.attacks[0]["name"] == "pgd-20"


@pytest.mark.parametrize("kwargs, message", [
    ({"epsilon": -0.1}, "epsilon"),
    ({"attacks": "nonsense"}, "attack='nonsense'"),
    ({"checks": ["nonsense"]}, "checks="),
    ({"attacks": [attacks.PGD(epsilon=0.3)]}, "threat model"),
    ({"batch_size": 0}, "batch_size"),
])
def test_bad_arguments_are_named(trained, kwargs, message):
    standard, _, data = trained
    options = {"epsilon": EPSILON, "verbose": False, **kwargs}
    with pytest.raises((ValueError, TypeError), match=message):
        tfrobust.evaluate(standard, data, **options)


def test_bad_data_is_refused(trained):
    standard, _, (x, y) = trained
    with pytest.raises(ValueError, match="uint8"):
        tfrobust.evaluate(standard, ((x * 255).astype("uint8"), y), epsilon=0.1, verbose=False)
    with pytest.raises(ValueError, match="y"):
        tfrobust.evaluate(standard, (x, y + 10), epsilon=0.1, verbose=False)
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        tfrobust.evaluate("missing.keras", (x, y), epsilon=0.1, verbose=False)
    with pytest.raises(ValueError, match="epsilon"):
        tfrobust.evaluate(_wrap(standard), (x, y), verbose=False)
