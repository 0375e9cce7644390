"""RobustModel: closed-form training steps, XLA, saving, learning on real digits, bad input."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfrobust import attacks
from tfrobust.models import RobustModel, small_cnn


def linear_robust_model(weights, bias, epsilon=0.3, step_size=0.1, num_steps=7, lr=0.5):
    """Identity backbone (Flatten) + Dense head, PGD without random start, plain SGD."""
    backbone = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten()])
    head = keras.layers.Dense(2, name="head")
    model = RobustModel(
        backbone, head,
        attack=attacks.PGD(epsilon=epsilon, step_size=step_size, num_steps=num_steps,
                           random_start=False),
        eval_attack=False,
    )
    model(np.zeros((1, 2, 2, 1), "float32"))
    head.set_weights([np.asarray(weights, "float32"), np.asarray(bias, "float32")])
    model.compile(optimizer=keras.optimizers.SGD(lr))
    return model


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_one_pgd_at_step_on_a_linear_model_equals_the_update_by_hand(jit_compile):
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(4, 2)), rng.normal(size=2)
    x = rng.uniform(0.35, 0.65, size=(6, 2, 2, 1)).astype("float32")
    y = np.array([0, 1, 1, 0, 1, 0], "int32")
    model = linear_robust_model(w, b)
    model.compile(optimizer=keras.optimizers.SGD(0.5), jit_compile=jit_compile)
    model.fit(x, y, batch_size=6, epochs=1, shuffle=False, verbose=0)

    # PGD on a 2-class linear model ends at x + eps * sign(w_other - w_y) (see test_pgd.py).
    flat = x.reshape(6, -1)
    direction = np.where(y[:, None] == 0, w[:, 1] - w[:, 0], w[:, 0] - w[:, 1])
    x_adv = np.clip(flat + 0.3 * np.sign(direction), 0, 1)
    residual = softmax(x_adv @ w + b) - np.eye(2)[y]           # (B, K)
    grad_w, grad_b = x_adv.T @ residual / 6, residual.mean(0)  # mean CE over the batch
    new_w, new_b = model.head.get_weights()
    np.testing.assert_allclose(new_w, w - 0.5 * grad_w, atol=1e-5)
    np.testing.assert_allclose(new_b, b - 0.5 * grad_b, atol=1e-5)


def test_default_compile_picks_the_measured_path_on_cpu():
    model = linear_robust_model(np.zeros((4, 2)), np.zeros(2))
    model.compile(optimizer="sgd")  # jit_compile="auto"
    assert model.jit_compile is (len(tf.config.list_physical_devices("GPU")) > 0)


def test_train_step_traces_under_xla_and_matches_the_graph_path(mnist_sample):
    x, y = mnist_sample[0][:64], mnist_sample[1][:64]
    weights = {}
    for jit in (False, True):
        keras.utils.set_random_seed(3)
        backbone = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 5, 2),
                                     keras.layers.ReLU(), keras.layers.Flatten()])
        # No random start: XLA and the TF kernels draw different stateless streams.
        model = RobustModel(backbone, keras.layers.Dense(10),
                            attack=attacks.PGD(epsilon=0.3, num_steps=3, random_start=False))
        model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=jit)
        logs = model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0).history
        assert model.jit_compile is jit
        assert np.isfinite(logs["loss"][0])
        weights[jit] = model.get_weights()
    for a, b in zip(weights[False], weights[True]):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_keras_round_trip_keeps_predictions_and_config(tmp_path, mnist_sample):
    x = mnist_sample[2][:16]
    keras.utils.set_random_seed(0)
    model = RobustModel(small_cnn(), keras.layers.Dense(10, name="head"),
                        attack=attacks.PGD(epsilon=0.3, step_size=0.01, num_steps=40),
                        attack_bn="training", seed=5)
    model.compile(optimizer="adam")
    model.fit(x, mnist_sample[3][:16], epochs=1, verbose=0)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)  # safe mode, no custom_objects
    assert isinstance(restored, RobustModel)
    np.testing.assert_array_equal(restored.predict(x, verbose=0), model.predict(x, verbose=0))
    assert restored.attack.get_config() == model.attack.get_config()
    assert restored.eval_attack.num_steps == 20
    assert restored.attack_bn == "training" and restored.seed == 5
    # The optimizer comes back compiled, with its state: training can go on.
    assert restored.optimizer.iterations.numpy() == model.optimizer.iterations.numpy() == 1


def test_from_classifier_shares_weights_and_predictions(mnist_sample):
    x = mnist_sample[2][:8]
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Flatten()(inputs)
    h = keras.layers.Dense(16, activation="relu", name="penultimate")(h)
    logits = keras.layers.Dense(10, name="logits")(h)
    classifier = keras.Model(inputs, logits)
    model = RobustModel.from_classifier(classifier, attack=attacks.PGD(epsilon=0.1))
    np.testing.assert_allclose(model.predict(x, verbose=0), classifier.predict(x, verbose=0),
                               atol=1e-6)
    assert model.features(x).shape == (8, 16)
    named = RobustModel.from_classifier(classifier, feature_layer="penultimate",
                                        attack=attacks.PGD(epsilon=0.1))
    assert named.backbone.output_shape == (None, 16)
    with pytest.raises(ValueError, match="feature_layer='nope'"):
        RobustModel.from_classifier(classifier, feature_layer="nope",
                                    attack=attacks.PGD(epsilon=0.1))


def _small_model():
    backbone = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten()])
    model = RobustModel(backbone, keras.layers.Dense(10), attack=attacks.PGD(epsilon=0.3))
    model.compile(optimizer="adam")
    return model


def test_bad_data_gets_a_clear_error_before_training(mnist_sample):
    x, y = mnist_sample[0][:32], mnist_sample[1][:32]
    model = _small_model()
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=r"values in \[0, 255\].*Divide"):
        model.fit(x * 255, y, verbose=0)
    with pytest.raises(ValueError, match=r"labels in \[0, 9\].*\[0, 12\]"):
        model.fit(x, np.where(y == y[0], 12, y), verbose=0)
    with pytest.raises(ValueError, match=r"rank 4.*\(32, 28, 28\)"):
        model.fit(x[..., 0], y, verbose=0)
    with pytest.raises(ValueError, match="dtype uint8"):
        model.fit((x * 255).astype("uint8"), y, verbose=0)
    dataset = tf.data.Dataset.from_tensor_slices((x * 255, y)).batch(8)
    with pytest.raises(ValueError, match=r"first batch.*Divide"):
        model.fit(dataset, verbose=0)
    with pytest.raises(ValueError, match="validation_data"):
        model.fit(x, y, validation_data=(x, y + 10), verbose=0)
    for old, new in zip(before, model.get_weights()):  # nothing was trained
        np.testing.assert_array_equal(old, new)


def test_bad_construction_gets_a_clear_error():
    backbone = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten()])
    with pytest.raises(ValueError, match="attack=None"):
        RobustModel(backbone, keras.layers.Dense(10))
    with pytest.raises(ValueError, match="attack_bn='eval'"):
        RobustModel(backbone, keras.layers.Dense(10), attack=attacks.PGD(epsilon=0.1),
                    attack_bn="eval")
    with pytest.raises(ValueError, match="objective='magic'"):
        RobustModel(backbone, keras.layers.Dense(10), objective="magic")
    model = _small_model()
    with pytest.raises(ValueError, match="takes no loss"):
        model.compile(optimizer="adam", loss="mse")


@pytest.mark.parametrize("method", ["pgd-at", "free-at"])
def test_train_clean_accuracy_off_drops_the_log_and_changes_no_weight(method):
    rng = np.random.default_rng(1)
    w, b = rng.normal(size=(4, 2)), rng.normal(size=2)
    x = rng.uniform(0.2, 0.8, size=(12, 2, 2, 1)).astype("float32")
    y = (x.reshape(12, -1).sum(-1) > 2.0).astype("int32")
    weights, logs = [], []
    for track in (True, False):
        model = linear_robust_model(w, b)
        model = RobustModel(model.backbone, model.head, objective=method,
                            attack=model.attack, eval_attack=None, train_clean_accuracy=track)
        model.compile(optimizer=keras.optimizers.SGD(0.5))
        history = model.fit(x, y, batch_size=6, epochs=2, shuffle=False, verbose=0,
                            validation_data=(x, y))
        weights.append(model.head.get_weights())
        logs.append(history.history)
    # The skipped pass is inference only: the same updates to the last bit.
    for with_log, without_log in zip(*weights):
        np.testing.assert_array_equal(with_log, without_log)
    assert "accuracy" in logs[0] and "accuracy" not in logs[1]
    assert logs[0]["val_accuracy"] == logs[1]["val_accuracy"]
    assert logs[0]["adv_accuracy"] == logs[1]["adv_accuracy"]


def test_train_clean_accuracy_is_saved_and_checked(tmp_path):
    model = linear_robust_model(np.zeros((4, 2)), np.zeros(2))
    quiet = RobustModel(model.backbone, model.head, attack=model.attack, eval_attack=False,
                        train_clean_accuracy=False)
    restored = RobustModel.from_config(quiet.get_config())
    assert restored.train_clean_accuracy is False
    with pytest.raises(TypeError, match="train_clean_accuracy='no'"):
        RobustModel(model.backbone, model.head, attack=model.attack, train_clean_accuracy="no")


class _CountingTraces(RobustModel):
    """Counts the Python calls of `train_step`: one per trace of the train function."""

    def __init__(self, *args, defer_optimizer=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.defer_optimizer, self.traces = defer_optimizer, 0

    def _build_optimizer(self):
        if not self.defer_optimizer:  # True: leave it to the trace, as Keras does
            super()._build_optimizer()

    def train_step(self, data):
        self.traces += 1
        return super().train_step(data)


@pytest.mark.parametrize("objective", ["pgd-at", "trades"])
def test_fit_traces_the_train_step_once_and_trains_as_keras_would(objective):
    """The optimizer's variables exist before the first trace, so TensorFlow need not
    trace the step again; left to the trace (Keras' own order) it takes two, and the
    weights after two epochs are bit for bit the same either way."""
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(64, 2, 2, 1)).astype("float32")
    y = rng.integers(0, 2, size=64).astype("int32")
    traces, weights = {}, {}
    for defer in (False, True):
        keras.utils.set_random_seed(0)
        backbone = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten(),
                                     keras.layers.Dense(8, activation="relu")])
        model = _CountingTraces(backbone, keras.layers.Dense(2), objective=objective,
                                attack=attacks.PGD(epsilon=0.1, num_steps=2),
                                eval_attack=False, defer_optimizer=defer)
        model.compile(optimizer="adam")
        assert not model.optimizer.built
        model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        assert model.optimizer.built and len(model.optimizer.variables) > 2  # Adam's moments
        traces[defer], weights[defer] = model.traces, model.get_weights()
    assert traces == {False: 1, True: 2}
    for built_first, deferred in zip(weights[False], weights[True]):
        np.testing.assert_array_equal(built_first, deferred)
