"""Fidelity to the reference code: ADR's latent, the TRADES SmallCNN, HE's logits per use."""

import json
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfrobust
from tfrobust import attacks, models, objectives
from tfrobust import recipe
from tfrobust.export.saved_model import serving_outputs
from tfrobust.layers import HypersphereDense
from tfrobust.models import RobustModel, preact_resnet18, small_cnn, wide_resnet
from tfrobust.objectives import regularizers as R


# -- 1. each backbone declares its reference latent ----------------------------------------
@pytest.mark.parametrize("build,name,shape,layer,width", [
    ("small_cnn", small_cnn, (28, 28, 1), "flatten", 1024),
    ("small_cnn", small_cnn, (32, 32, 3), "flatten", 1600),
    ("preact_resnet18", preact_resnet18, (32, 32, 3), "features", 512),
    ("wide_resnet", lambda input_shape: wide_resnet(16, 2, input_shape=input_shape), (32, 32, 3),
     "features", 128),
], ids=["small_cnn-mnist", "small_cnn-cifar", "preact_resnet18", "wide_resnet-16-2"])
def test_each_backbone_declares_its_reference_latent(build, name, shape, layer, width):
    backbone = name(input_shape=shape)
    assert models.reference_latent(backbone) == layer
    assert models.reference_latent_name(build) == layer
    assert backbone.get_layer(layer).output.shape == (None, width)


def test_a_backbone_without_a_declaration_falls_back_to_its_output_layer():
    inputs = keras.Input((4, 4, 1))
    outputs = keras.layers.Dense(3, name="last")(keras.layers.Flatten(name="flat")(inputs))
    assert models.reference_latent(keras.Model(inputs, outputs)) == "last"


def _adr_model(backbone, objective="adr", **kwargs):
    return RobustModel(backbone, keras.layers.Dense(10), objective=objective,
                       attack=attacks.PGD(epsilon=0.3, num_steps=1), eval_attack=False, **kwargs)


def test_adr_reads_the_reference_latent_unless_told_otherwise(mnist_sample):
    keras.utils.set_random_seed(0)
    backbone = small_cnn()
    default = _adr_model(backbone)
    assert default.objective.layer == "flatten"
    assert default.get_config()["objective"]["config"]["layer"] == "flatten"
    shorthand = _adr_model(backbone, objective="pgd-at", regularizers=[R.LocalCompactness()])
    assert shorthand.objective.layer == "flatten"
    told = _adr_model(backbone, objective=objectives.ADR(layer="features"))
    assert told.objective.layer == "features"
    # The objective given is not changed in place (it may serve another backbone).
    given = objectives.ADR()
    _adr_model(backbone, objective=given)
    assert given.layer is None

    # Local compactness by hand, mean_k |h(x) - h(x')|, on the 1,024 flattened values by
    # default and on the 200 features when told (no dropout, so both passes are exact).
    x = tf.constant(mnist_sample[0][:8])
    y = tf.constant(mnist_sample[1][:8].astype("int32"))
    x_adv = tf.clip_by_value(x + 0.3 * tf.sign(tf.random.stateless_normal(x.shape, [1, 2])), 0, 1)
    plain = small_cnn(dropout=0.0)
    for layer, width in (("flatten", 1024), (None, 1024), ("features", 200)):
        model = _adr_model(plain, objective=objectives.ADR(regularizers=[R.LocalCompactness()],
                                                           layer=layer))
        tap = keras.Model(plain.inputs, plain.get_layer(layer or "flatten").output)
        assert tap.output.shape == (None, width)
        expected = np.mean(np.abs(tap(x).numpy() - tap(x_adv).numpy()))
        terms = model.objective.compute_loss(model, x, x_adv, y).terms
        assert float(terms["local_compactness"]) == pytest.approx(expected, rel=1e-5)


def test_a_file_saved_before_layers_were_resolved_loads_reading_the_features(tmp_path):
    """Older `.keras` files hold `layer: null`; they load as they were trained."""
    model = _adr_model(small_cnn(dropout=0.0))
    path = str(tmp_path / "new.keras")
    model.save(path)
    assert keras.saving.load_model(path).objective.layer == "flatten"
    old = str(tmp_path / "old.keras")
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(old, "w") as target:
        for item in source.infolist():
            content = source.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(content)
                config["config"]["objective"]["config"]["layer"] = None
                content = json.dumps(config).encode()
            target.writestr(item, content)
    restored = keras.saving.load_model(old)
    assert restored.objective.layer == "features"


# -- 2. small_cnn is the TRADES SmallCNN -----------------------------------------------------
def test_small_cnn_is_the_trades_smallcnn():
    keras.utils.set_random_seed(0)
    backbone = small_cnn(initialization="reference")
    assert [layer.name for layer in backbone.layers] == [
        "images", "conv1", "conv2", "pool1", "conv3", "conv4", "pool2", "flatten", "fc1",
        "dropout", "features"]
    assert backbone.get_layer("dropout").rate == 0.5
    # Convolutions: kaiming_normal_, N(0, 2 / fan_in), zero bias.
    for name, fan_in in (("conv2", 9 * 32), ("conv4", 9 * 64)):
        kernel, bias = backbone.get_layer(name).get_weights()
        assert np.std(kernel) == pytest.approx(np.sqrt(2 / fan_in), rel=0.03)
        assert not bias.any()
    # fc1, fc2: PyTorch's nn.Linear, weight and bias U(+-1/sqrt(fan_in)).
    for name, fan_in in (("fc1", 1024), ("features", 200)):
        kernel, bias = backbone.get_layer(name).get_weights()
        bound = 1 / np.sqrt(fan_in)
        assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound
        assert np.std(kernel) == pytest.approx(bound / np.sqrt(3), rel=0.03)
        assert np.std(bias) == pytest.approx(bound / np.sqrt(3), rel=0.25)
    # Dropout only in training calls.
    x = np.random.default_rng(0).uniform(size=(16, 28, 28, 1)).astype("float32")
    np.testing.assert_array_equal(backbone(x).numpy(), backbone(x).numpy())
    assert not np.allclose(backbone(x, training=True).numpy(), backbone(x).numpy())
    assert [layer.name for layer in small_cnn(dropout=0.0).layers if "drop" in layer.name] == []
    with pytest.raises(ValueError, match="dropout=1.0"):
        small_cnn(dropout=1.0)
    with pytest.raises(ValueError, match="initialization='torch'"):
        small_cnn(initialization="torch")
    # The default differs from the reference only in its initialisation: Glorot, zero bias.
    kernel, bias = small_cnn().get_layer("fc1").get_weights()
    assert np.std(kernel) == pytest.approx(np.sqrt(2 / (1024 + 200)), rel=0.03)
    assert not bias.any()


def test_the_cli_dense_head_starts_at_zero_on_the_reference_small_cnn():
    info = tfrobust.data.DatasetInfo("x", (28, 28, 1), 10, "arrays")
    options = dict(recipe.defaults(), dropout=0.5, initialization="reference")
    model = recipe.build_model(options, info)
    assert not np.any(model.head.kernel.numpy()) and not np.any(model.head.bias.numpy())
    conv = model.backbone.get_layer("conv2").kernel.numpy()
    assert np.std(conv) == pytest.approx(np.sqrt(2 / (9 * 32)), rel=0.03)
    options = dict(recipe.defaults(), dropout=0.5, initialization="keras")
    assert np.std(recipe.build_model(options, info).head.kernel.numpy()) > 0.01
    options = dict(recipe.defaults(), model="preact_resnet18")
    info = tfrobust.data.DatasetInfo("x", (32, 32, 3), 10, "arrays")
    assert np.std(recipe.build_model(options, info).head.kernel.numpy()) > 0.01


# -- 3. HE: which logits each use sees, defined once -----------------------------------------
@pytest.fixture(scope="module")
def he_model(mnist_sample):
    """A small conv net with the hypersphere head (s = 15), trained briefly, and 128 digits."""
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(8, 5, 2),
                                 keras.layers.ReLU(), keras.layers.Flatten(),
                                 keras.layers.Dense(32, activation="relu")])
    attack = attacks.PGD(epsilon=0.15, num_steps=5, step_size=0.05, random_start=False)
    model = RobustModel(backbone, HypersphereDense(10, scale=15.0, margin=0.2),
                        objective="standard", attack=None, eval_attack=attack)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(mnist_sample[0][:2048], mnist_sample[1][:2048], batch_size=64, epochs=2, verbose=0)
    return model, attack, mnist_sample[2][:128], mnist_sample[3][:128].astype("int32")


def test_the_logit_uses_are_those_of_the_he_reference(he_model):
    model, _, x, y = he_model
    cos = model.head.cosine(model.backbone(x)).numpy()
    np.testing.assert_allclose(model(x).numpy(), cos, atol=1e-6)
    np.testing.assert_allclose(model.logits_fn("evaluation")(x).numpy(), cos, atol=1e-6)
    np.testing.assert_allclose(model.logits_fn("training_attack")(x).numpy(), 15 * cos,
                               atol=1e-5)
    z = model.backbone(x)
    np.testing.assert_allclose(model.use_logits(z, "loss", y).numpy(),
                               15 * (cos - 0.2 * np.eye(10)[y]), atol=1e-5)
    # TRADES' KL, ALP's pairing and ADR's regularisers compare s * cos, without margin.
    np.testing.assert_allclose(model.use_logits(z, "regularizer", y).numpy(), 15 * cos,
                               atol=1e-5)
    with pytest.raises(ValueError, match="use='loss'"):
        model.logits_fn("loss")
    with pytest.raises(ValueError, match="use='served'"):
        model.use_logits(z, "served")


def test_every_evaluation_path_attacks_the_cosines(he_model):
    model, attack, x, y = he_model
    seed = tf.constant([0, 0])
    cos_fn = lambda images: model.head.cosine(model.backbone(images))  # noqa: E731
    on_cos = attack.perturb(cos_fn, x, y, seed).numpy()
    on_scaled = attack.perturb(lambda images: 15.0 * cos_fn(images), x, y, seed).numpy()
    # The two logits give different attacks here, so the checks below tell them apart.
    assert np.abs(on_cos - on_scaled).max() > 0.1
    clean_right = np.argmax(cos_fn(x).numpy(), -1) == y
    adv_right = np.argmax(cos_fn(on_cos).numpy(), -1) == y
    scaled_right = np.argmax(cos_fn(on_scaled).numpy(), -1) == y
    assert adv_right.mean() != scaled_right.mean()

    # Any attack called on the model (AutoAttack's members, the ensemble runner).
    np.testing.assert_allclose(attack.perturb(model, x, y, seed).numpy(), on_cos, atol=1e-6)
    ensemble = attacks.run_ensemble([attack], model, x, y, verbose=False)
    assert ensemble.robust_accuracy == pytest.approx(np.mean(clean_right & adv_right))
    # Validation: val_adv_accuracy.
    logs = model.evaluate(x, y, batch_size=len(x), return_dict=True, verbose=0)
    assert logs["adv_accuracy"] == pytest.approx(adv_right.mean())
    assert logs["accuracy"] == pytest.approx(clean_right.mean())
    # tfrobust.evaluate.
    report = tfrobust.evaluate(model, (x, y), norm="linf", epsilon=0.15, attacks=[attack],
                               sweep_attacks=(), checks=False, verbose=False)
    assert report.robust_accuracy == pytest.approx(np.mean(clean_right & adv_right))
    # The export: logits are the cosines, probabilities softmax(s * cos).
    served = serving_outputs(model, tf.constant(x))
    np.testing.assert_allclose(served["logits"].numpy(), cos_fn(x).numpy(), atol=1e-6)
    np.testing.assert_allclose(served["probabilities"].numpy(),
                               tf.nn.softmax(15.0 * cos_fn(x)).numpy(), atol=1e-6)


# -- ADR at the reference latent learns ------------------------------------------------------
def _short_run(mnist_sample, objective, initialization):
    """64 updates of batch 128 (PGD-2 at L-inf 0.3, step 0.15, Adam 1e-3) on the bundled sample.

    Returns clean and PGD-10 accuracy on 500 test digits, and the last local compactness.
    Measured (AMD EPYC, 2026-12-05, in the test's order): PGD-AT 0.708 clean, 0.288 PGD-10;
    ADR 0.892, 0.296, local compactness 0.19; ADR with the reference initialisation (the same
    run, now `experiments/adr_scale.py`'s "reference" variant) 0.140 clean, compactness 25.9.
    Until ADR's update was made reproducible (tests/test_determinism.py) its runs varied in
    the last bits from run to run, and on this diverging run that showed: 0.212 clean and
    compactness 26.1 one time, 0.310 and 21.3 another. With PGD-3 (step 0.1) they were
    0.638, 0.284; 0.904, 0.272, 0.17; 0.156, 23.7, and with PGD-5 (the experiment's attack,
    `experiments/adr_short_runs.py`, twice the passes of PGD-2 an update) 0.438, 0.226;
    0.900, 0.336, 0.16; 0.190, 19.6 (2026-12-04): the same verdicts.
    """
    x, y, x_test, y_test = mnist_sample
    x_test, y_test = x_test[:500], y_test[:500].astype("int32")
    keras.utils.set_random_seed(0)
    options = recipe.resolve(dict(recipe.defaults(), method="pgd-at", adr=objective == "adr",
                                  initialization=initialization, num_steps=2, step_size=0.15,
                                  dropout=0.5))
    info = tfrobust.data.DatasetInfo("mnist-sample", (28, 28, 1), 10, "arrays")
    model = recipe.build_model(options, info)
    history = model.fit(x[:4096], y[:4096], batch_size=128, epochs=2, verbose=0).history
    x_adv = attacks.PGD(epsilon=0.3, num_steps=10, step_size=0.075).perturb(
        model, x_test, y_test, tf.constant([1, 2]))
    clean = np.mean(np.argmax(model.predict(x_test, verbose=0), -1) == y_test)
    robust = np.mean(np.argmax(model.predict(x_adv, verbose=0), -1) == y_test)
    return clean, robust, history.get("local_compactness", [None])[-1]


@pytest.mark.slow
def test_adr_at_the_reference_latent_learns_as_pgd_at_does(mnist_sample):
    """The same short run: ADR (the default layer, reference weights) keeps up with PGD-AT.

    With small_cnn's reference initialisation instead, ADR's latent diverges on this run
    (why Keras' initialisation is the default, see `small_cnn`): that run is
    `experiments/adr_scale.py`'s "reference" variant, tested in tests/test_experiments.py.
    """
    pgd_clean, pgd_robust, _ = _short_run(mnist_sample, "pgd-at", "keras")
    adr_clean, adr_robust, adr_compactness = _short_run(mnist_sample, "adr", "keras")
    assert pgd_clean > 0.3  # PGD-AT has left chance (0.13 on these digits)
    assert adr_clean >= pgd_clean - 0.1 and adr_robust >= pgd_robust - 0.1
    assert adr_compactness < 2.0
