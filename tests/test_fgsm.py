"""FGSM and FGSM-RS against closed-form answers on linear models, and their budget."""

import keras
import numpy as np
import pytest

from conftest import ascent_direction, predicted, two_class_model
from tfrobust import attacks


def test_linf_fgsm_on_a_linear_model_equals_the_closed_form():
    model = two_class_model()
    x = np.random.default_rng(0).uniform(0.2, 0.8, size=(4, 2, 2, 1)).astype("float32")
    x[1] = 0.05  # near the lower bound: clipping to [0, 1] must show
    y = predicted(model, x)
    x_adv = attacks.FGSM(epsilon=0.3)(model, x, y).numpy().reshape(4, -1)
    expected = np.clip(x.reshape(4, -1) + 0.3 * np.sign(ascent_direction(model, y)), 0.0, 1.0)
    np.testing.assert_allclose(x_adv, expected, atol=1e-6)


def test_l2_fgsm_on_a_linear_model_equals_the_closed_form():
    model = two_class_model(seed=1)
    x = np.full((2, 2, 2, 1), 0.5, "float32")
    x[1, 0, 0, 0] = 0.4
    y = predicted(model, x)
    x_adv = attacks.FGSM(epsilon=0.2, norm="l2")(model, x, y).numpy().reshape(2, -1)
    g = ascent_direction(model, y)
    expected = x.reshape(2, -1) + 0.2 * g / np.linalg.norm(g, axis=1, keepdims=True)
    np.testing.assert_allclose(x_adv, expected, atol=1e-6)


def test_targeted_fgsm_steps_towards_the_target():
    model = two_class_model(seed=2)
    w = model.get_layer("linear").get_weights()[0]
    x = np.full((1, 2, 2, 1), 0.5, "float32")
    attack = attacks.FGSM(epsilon=0.25, targeted=True)
    x_adv = attack(model, x, np.array([1])).numpy().reshape(-1)
    np.testing.assert_allclose(x_adv, 0.5 + 0.25 * np.sign(w[:, 1] - w[:, 0]), atol=1e-6)


def test_fgsm_rs_is_one_signed_step_of_1_25_eps_from_a_uniform_start():
    # Wong et al. 2020: delta = clip(u + 1.25 eps sign(g), -eps, eps), u ~ U[-eps, eps]^d.
    model = two_class_model(seed=3, input_shape=(4, 4, 1))
    x = np.full((64, 4, 4, 1), 0.5, "float32")
    y = predicted(model, x)
    eps = 0.3
    attack = attacks.get("fgsm-rs", epsilon=eps, seed=11)
    assert attack.step_size == pytest.approx(1.25 * eps) and attack.random_start
    # With a zero step the attack returns its start; the same seed draws the same start.
    start = attacks.FGSMRS(epsilon=eps, step_size=0.0, seed=11)(model, x, y).numpy()
    u = (start - x).reshape(64, -1)
    assert np.abs(u).max() <= eps + 1e-6 and np.abs(u).max() > 0.9 * eps
    assert abs(u.mean()) < 0.02  # centred: uniform in the cube, not a corner
    delta = attack(model, x, y).numpy().reshape(64, -1) - x.reshape(64, -1)
    expected = np.clip(u + 1.25 * eps * np.sign(ascent_direction(model, y)), -eps, eps)
    np.testing.assert_allclose(delta, expected, atol=1e-6)
    # Coordinates whose start lies more than eps/4 against the step end inside the ball:
    # a share of (eps - eps/4) / (2 eps) = 3/8.
    inside = np.mean(np.abs(delta) < eps - 1e-6)
    assert 0.3 < inside < 0.45


@pytest.mark.parametrize("name,norm,epsilon", [("fgsm", "linf", 0.3), ("fgsm-rs", "linf", 0.3),
                                               ("fgsm-rs", "l2", 1.5)])
def test_fgsm_stays_in_budget_and_range_on_real_digits(mnist_sample, name, norm, epsilon):
    x, y = mnist_sample[2][:64], mnist_sample[3][:64]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 3),
                              keras.layers.ReLU(), keras.layers.Flatten(),
                              keras.layers.Dense(10)])
    x_adv = attacks.get(name, epsilon=epsilon, norm=norm)(model, x, y).numpy()
    assert np.all(np.isfinite(x_adv))
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    delta = (x_adv - x).reshape(len(x), -1)
    norms = np.abs(delta).max(1) if norm == "linf" else np.linalg.norm(delta, axis=1)
    assert norms.max() <= epsilon * (1 + 1e-5)
    # Points the random model already gets wrong come back unchanged; the others use the budget.
    right = np.argmax(model(x).numpy(), -1) == y
    assert right.sum() >= 3 and np.all(norms[~right] == 0)
    assert np.median(norms[right]) > 0.5 * epsilon


def test_fgsm_traces_under_xla():
    model = two_class_model()
    x = np.random.default_rng(1).uniform(0.2, 0.8, size=(3, 2, 2, 1)).astype("float32")
    y = predicted(model, x)
    eager = attacks.FGSM(epsilon=0.1, jit_compile=False)(model, x, y).numpy()
    xla = attacks.FGSM(epsilon=0.1, jit_compile=True)(model, x, y).numpy()
    np.testing.assert_allclose(xla, eager, atol=1e-6)
    # XLA draws different stateless random numbers than the TF kernels, so with a
    # random start only the guarantees carry over, not the exact points.
    x_rs = attacks.FGSMRS(epsilon=0.1, jit_compile=True)(model, x, y).numpy()
    assert np.abs(x_rs - x).max() <= 0.1 + 1e-6 and not np.allclose(x_rs, x)


@pytest.mark.parametrize("name,kwargs,cls", [
    ("fgsm", {"epsilon": 0.5, "norm": "l2", "loss": "dlr", "seed": 3}, attacks.FGSM),
    ("fgsm-rs", {"epsilon": 0.1, "step_size": 0.05}, attacks.FGSMRS),
])
def test_config_round_trip(name, kwargs, cls):
    attack = attacks.get(name, **kwargs)
    restored = attacks.get(attacks.serialize(attack))
    assert type(restored) is cls
    assert restored.get_config() == attack.get_config()
    assert "num_steps" not in attack.get_config()


def test_default_step_sizes():
    assert attacks.FGSM(epsilon=0.2).step_size == pytest.approx(0.2)
    assert attacks.FGSM(epsilon=0.2, random_start=True).step_size == pytest.approx(0.25)
    assert attacks.FGSMRS(epsilon=0.2).step_size == pytest.approx(0.25)
    assert attacks.FGSMRS(epsilon=0.2, step_size=0.1).step_size == pytest.approx(0.1)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"epsilon": -1.0}, "epsilon=-1.0"),
        ({"epsilon": 0.3, "loss": "hinge"}, "loss='hinge'"),
        ({"epsilon": 0.3, "norm": "l1"}, "norm='l1'"),
        ({"epsilon": 0.3, "step_size": -0.1}, "step_size=-0.1"),
        ({"epsilon": 0.3, "num_steps": 5}, "num_steps=5"),
    ],
)
def test_bad_configuration_is_refused_with_the_argument_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        attacks.FGSM(**kwargs)
    with pytest.raises(ValueError, match=match):
        attacks.FGSMRS(**kwargs)
