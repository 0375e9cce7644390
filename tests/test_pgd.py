"""PGD against closed-form answers on linear models, and its budget guarantees."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import predicted, two_class_model
from tfrobust import attacks


def test_linf_pgd_on_a_linear_model_equals_the_closed_form():
    # For a 2-class linear model the CE gradient w.r.t. x is p_other * (w_other - w_y):
    # its sign never changes, so PGD walks to the corner x + eps * sign(w_other - w_y).
    model = two_class_model()
    w = model.get_layer("linear").get_weights()[0]
    x = np.full((3, 2, 2, 1), 0.5, "float32")
    x[1] = 0.05  # near the lower bound: clipping to [0, 1] must show
    y = np.array([0, 1, 0], "int32")
    attack = attacks.PGD(epsilon=0.3, num_steps=7, step_size=0.1, random_start=False)
    x_adv = attack.perturb(model, x, y).numpy()
    direction = np.where(y[:, None] == 0, w[:, 1] - w[:, 0], w[:, 0] - w[:, 1])  # (B, D)
    expected = np.clip(x.reshape(3, -1) + 0.3 * np.sign(direction), 0.0, 1.0)
    np.testing.assert_allclose(x_adv.reshape(3, -1), expected, atol=1e-6)


def test_single_step_linf_pgd_is_fgsm():
    model = two_class_model(seed=3)
    w = model.get_layer("linear").get_weights()[0]
    x = np.full((1, 2, 2, 1), 0.5, "float32")
    attack = attacks.PGD(epsilon=0.1, num_steps=1, step_size=0.1, random_start=False)
    x_adv = attack.perturb(model, x, np.array([1])).numpy()
    expected = 0.5 + 0.1 * np.sign(w[:, 0] - w[:, 1])
    np.testing.assert_allclose(x_adv.reshape(-1), expected, atol=1e-6)


def test_l2_pgd_on_a_linear_model_equals_the_closed_form():
    # The L2 steepest-ascent direction is the normalised gradient, constant here:
    # PGD ends on the sphere of radius eps along w_other - w_y.
    model = two_class_model(seed=1)
    w = model.get_layer("linear").get_weights()[0]
    x = np.full((2, 2, 2, 1), 0.5, "float32")
    y = np.array([0, 1], "int32")
    attack = attacks.PGD(epsilon=0.2, norm="l2", num_steps=5, step_size=0.07, random_start=False)
    x_adv = attack.perturb(model, x, y).numpy().reshape(2, -1)
    direction = np.where(y[:, None] == 0, w[:, 1] - w[:, 0], w[:, 0] - w[:, 1])
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    np.testing.assert_allclose(x_adv, 0.5 + 0.2 * direction, atol=1e-5)


def test_targeted_pgd_moves_towards_the_target():
    model = two_class_model(seed=2)
    w = model.get_layer("linear").get_weights()[0]
    x = np.full((1, 2, 2, 1), 0.5, "float32")
    attack = attacks.PGD(epsilon=0.25, num_steps=4, step_size=0.1, random_start=False,
                         targeted=True)
    x_adv = attack(model, x, np.array([1])).numpy().reshape(-1)
    np.testing.assert_allclose(x_adv, 0.5 + 0.25 * np.sign(w[:, 1] - w[:, 0]), atol=1e-6)


@pytest.mark.parametrize("norm,epsilon", [("linf", 0.3), ("l2", 1.5)])
def test_pgd_stays_in_budget_and_range_on_real_digits(mnist_sample, norm, epsilon):
    x, y = mnist_sample[2][:64], mnist_sample[3][:64]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(8, 3),
                              keras.layers.ReLU(), keras.layers.Flatten(),
                              keras.layers.Dense(10)])
    attack = attacks.PGD(epsilon=epsilon, norm=norm, num_steps=5, num_restarts=2)
    x_adv = attack.perturb(model, x, y).numpy()  # the raw algorithm, every point moved
    assert np.all(np.isfinite(x_adv))
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    delta = (x_adv - x).reshape(len(x), -1)
    norms = np.abs(delta).max(1) if norm == "linf" else np.linalg.norm(delta, axis=1)
    assert norms.max() <= epsilon * (1 + 1e-5)
    # The attack used its budget: most examples sit near the boundary of the ball.
    assert np.median(norms) > 0.5 * epsilon


def test_restarts_keep_the_strongest_result_per_example(mnist_sample):
    x, y = mnist_sample[2][:200], mnist_sample[3][:200]
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)])
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=3, verbose=0)
    one = attacks.PGD(epsilon=0.05, num_steps=3, num_restarts=1, seed=5)
    four = attacks.PGD(epsilon=0.05, num_steps=3, num_restarts=4, seed=5)
    # The first restart draws the same start as the single run (same seed), so
    # every example that one run breaks, four restarts break too.
    fooled_one = np.argmax(model(one(model, x, y)), -1) != y
    fooled_four = np.argmax(model(four(model, x, y)), -1) != y
    assert np.all(fooled_four[fooled_one])
    assert fooled_four.sum() > fooled_one.sum() > 0


def test_same_seed_gives_the_same_examples():
    model = two_class_model()
    x = np.random.default_rng(0).uniform(size=(4, 2, 2, 1)).astype("float32")
    y = np.array([0, 1, 1, 0])
    first = attacks.PGD(epsilon=0.1, num_steps=2, seed=7)(model, x, y).numpy()
    second = attacks.PGD(epsilon=0.1, num_steps=2, seed=7)(model, x, y).numpy()
    other = attacks.PGD(epsilon=0.1, num_steps=0, seed=8)(model, x, y).numpy()
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(first, other)


def test_an_attack_traces_once_for_every_batch_size():
    """Chunks of 5, 16, 3 and 1 examples (an evaluation's remaining points) share one graph,
    and each gives what the attack gives that chunk alone in a fresh attack."""
    model = two_class_model()
    rng = np.random.default_rng(0)
    attack = attacks.PGD(epsilon=0.1, num_steps=3, seed=2)
    for size in (5, 16, 3, 1):
        x = rng.uniform(size=(size, 2, 2, 1)).astype("float32")
        y = rng.integers(0, 2, size)
        fresh = attacks.PGD(epsilon=0.1, num_steps=3, seed=2)(model, x, y, seed=[2, 0])
        np.testing.assert_allclose(attack(model, x, y, seed=[2, 0]).numpy(), fresh.numpy(),
                                   atol=1e-6)
    assert attack._compiled[-1].experimental_get_tracing_count() == 1


def test_pgd_traces_under_xla():
    model = two_class_model()
    attack = attacks.PGD(epsilon=0.3, num_steps=7, step_size=0.1, random_start=False,
                         jit_compile=True)
    x = np.full((2, 2, 2, 1), 0.5, "float32")
    y = np.array([0, 1])
    eager = attacks.PGD(epsilon=0.3, num_steps=7, step_size=0.1, random_start=False,
                        jit_compile=False)(model, x, y)
    np.testing.assert_allclose(attack(model, x, y).numpy(), eager.numpy(), atol=1e-6)
    assert not np.allclose(eager.numpy(), x)  # the points did move
    compiled = tf.function(lambda a, b: attack.perturb(model, a, b), jit_compile=True)
    raw = attack.perturb(model, x, y)
    np.testing.assert_allclose(compiled(x, y).numpy(), raw.numpy(), atol=1e-6)


def test_evaluation_never_moves_points_the_model_already_gets_wrong():
    model = two_class_model(seed=4)
    x = np.random.default_rng(1).uniform(0.3, 0.7, size=(16, 2, 2, 1)).astype("float32")
    y = np.argmax(model(x), -1).astype("int32")
    y[:8] = 1 - y[:8]  # the first half is misclassified already
    attack = attacks.PGD(epsilon=0.2, num_steps=3)
    x_adv = attack(model, x, y).numpy()
    np.testing.assert_array_equal(x_adv[:8], x[:8])
    assert np.all(np.abs(x_adv[8:] - x[8:]).reshape(8, -1).max(1) > 0.1)
    raw = attack.perturb(model, x, y).numpy()
    assert not np.allclose(raw[:8], x[:8])  # the raw algorithm did move them


def test_config_round_trip():
    attack = attacks.PGD(epsilon=0.5, norm="l2", num_steps=3, step_size=0.2, num_restarts=2,
                         loss="dlr", seed=4)
    restored = attacks.get(attacks.serialize(attack))
    assert type(restored) is attacks.PGD
    assert restored.get_config() == attack.get_config()
    assert attacks.get("pgd", epsilon=0.1).epsilon == 0.1


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"epsilon": -1.0}, "epsilon=-1.0"),
        ({"epsilon": 0.3, "norm": "l3"}, "norm='l3'"),
        ({"epsilon": 0.3, "loss": "hinge"}, "loss='hinge'"),
        ({"epsilon": 0.3, "num_steps": -2}, "num_steps=-2"),
        ({"epsilon": 2.0}, "epsilon=2.0"),
        ({"epsilon": 0.3, "num_restarts": 0}, "num_restarts=0"),
    ],
)
def test_bad_configuration_is_refused_with_the_argument_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        attacks.PGD(**kwargs)


def test_bad_inputs_are_refused_with_the_argument_named():
    model = two_class_model()
    attack = attacks.PGD(epsilon=0.1)
    with pytest.raises(ValueError, match="dtype uint8"):
        attack(model, np.zeros((1, 2, 2, 1), "uint8"), np.array([0]))
    with pytest.raises(ValueError, match=r"values in \[255, 255\].*Divide"):
        attack(model, np.full((1, 2, 2, 1), 255.0, "float32"), np.array([0]))
    with pytest.raises(ValueError, match="rank 4"):
        attack(model, np.zeros((1, 4), "float32"), np.array([0]))
    with pytest.raises(ValueError, match="one label per image"):
        attack(model, np.zeros((2, 2, 2, 1), "float32"), np.array([0]))
    with pytest.raises(ValueError, match="unknown-attack"):
        attacks.get("unknown-attack")


def test_unrolled_and_looped_pgd_take_the_same_steps():
    """Short loops are written out in the graph on CPU (faster); the steps are the same."""
    model = two_class_model(seed=3)
    x = np.random.default_rng(0).uniform(0.2, 0.8, size=(16, 2, 2, 1)).astype("float32")
    y = predicted(model, x)
    runs = {}
    for limit in (0, 100):
        attack = attacks.PGD(epsilon=0.1, num_steps=7, random_start=True, seed=5)
        attack.unroll_up_to = limit
        runs[limit] = attack.perturb(model, tf.constant(x), tf.constant(y)).numpy()
    np.testing.assert_allclose(runs[0], runs[100], atol=1e-6)
    assert np.abs(runs[0] - x).max() == pytest.approx(0.1, abs=1e-6)
