"""APGD, its CE/DLR aliases and APGD-T: closed forms, schedule, budget and strength."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import ascent_direction, linear_classifier, predicted, two_class_model
from tfrobust import attacks
from tfrobust.attacks.apgd import checkpoints


def fooled(model, x_adv, y):
    return np.argmax(model(x_adv).numpy(), -1) != y


def small_conv_net(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 3, strides=2),
                             keras.layers.ReLU(), keras.layers.Flatten(), keras.layers.Dense(10)])


# -- the step-size schedule -----------------------------------------------------------------
def test_checkpoints_follow_the_papers_formula_exactly():
    # p = 0, .22, .41 (.22 + .19), .57 (+.16), .70 (+.13), .80 (+.10), .87 (+.07),
    # .93 (+.06), .99 (+.06); the next, 1.05, is past the end.
    assert checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    # ceil(p * 50): 11, ceil(20.5), ceil(28.5), 35, 40, ceil(43.5), ceil(46.5), ceil(49.5).
    assert checkpoints(50) == [0, 11, 21, 29, 35, 40, 44, 47, 50]
    # ceil(p * 10): 3, 5, 6, 7, 8, 9, 10, 10 -> repeats dropped.
    assert checkpoints(10) == [0, 3, 5, 6, 7, 8, 9, 10]
    assert checkpoints(1) == [0, 1]
    assert checkpoints(0) == [0]


# -- closed forms on linear models ----------------------------------------------------------
@pytest.mark.parametrize("loss", ["ce", "cw"])
@pytest.mark.parametrize("random_start", [False, True])
def test_linf_apgd_reaches_the_corner_of_the_box_on_a_linear_model(loss, random_start):
    # A 2-class linear loss is maximised over the box at x + eps * sign(w_other - w_y),
    # the point PGD walks to; APGD's momentum and restarts must not leave it.
    model = two_class_model()
    x = np.random.default_rng(0).uniform(0.3, 0.7, size=(4, 2, 2, 1)).astype("float32")
    x[1] = 0.05  # near the lower bound: clipping to [0, 1] must show
    y = predicted(model, x)
    attack = attacks.APGD(epsilon=0.3, num_steps=30, loss=loss, random_start=random_start)
    x_adv = attack(model, x, y).numpy().reshape(4, -1)
    expected = np.clip(x.reshape(4, -1) + 0.3 * np.sign(ascent_direction(model, y)), 0.0, 1.0)
    np.testing.assert_allclose(x_adv, expected, atol=1e-6)
    pgd = attacks.PGD(epsilon=0.3, num_steps=10, random_start=False)(model, x, y).numpy()
    np.testing.assert_allclose(x_adv, pgd.reshape(4, -1), atol=1e-6)


def test_l2_apgd_reaches_the_optimum_on_the_sphere():
    model = two_class_model(seed=1)
    x = np.full((2, 2, 2, 1), 0.5, "float32")
    x[1, 0, 0, 0] = 0.4
    y = predicted(model, x)
    attack = attacks.get("apgd-ce", epsilon=0.2, norm="l2", num_steps=30, random_start=False)
    x_adv = attack(model, x, y).numpy().reshape(2, -1)
    g = ascent_direction(model, y)
    expected = x.reshape(2, -1) + 0.2 * g / np.linalg.norm(g, axis=1, keepdims=True)
    np.testing.assert_allclose(x_adv, expected, atol=1e-5)


def test_targeted_apgd_moves_towards_the_target():
    model = two_class_model(seed=2)
    w = model.get_layer("linear").get_weights()[0]
    x = np.full((1, 2, 2, 1), 0.5, "float32")
    attack = attacks.APGD(epsilon=0.25, num_steps=10, random_start=False, targeted=True)
    x_adv = attack(model, x, np.array([1])).numpy().reshape(-1)
    np.testing.assert_allclose(x_adv, 0.5 + 0.25 * np.sign(w[:, 1] - w[:, 0]), atol=1e-6)


# -- guarantees on real digits --------------------------------------------------------------
@pytest.mark.parametrize("name,norm,epsilon", [
    ("apgd-ce", "linf", 0.3), ("apgd-ce", "l2", 1.5), ("apgd-dlr", "linf", 0.1),
    ("apgd-t", "l2", 1.0),
])
def test_apgd_stays_in_budget_and_range_on_real_digits(mnist_sample, name, norm, epsilon):
    x, y = mnist_sample[2][:64], mnist_sample[3][:64]
    model = small_conv_net()
    kwargs = {"num_target_classes": 2} if name == "apgd-t" else {}
    attack = attacks.get(name, epsilon=epsilon, norm=norm, num_steps=10, num_restarts=2,
                         **kwargs)
    x_adv = attack(model, x, y).numpy()
    assert np.all(np.isfinite(x_adv))
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    delta = (x_adv - x).reshape(len(x), -1)
    norms = np.abs(delta).max(1) if norm == "linf" else np.linalg.norm(delta, axis=1)
    assert norms.max() <= epsilon * (1 + 1e-5)
    right = np.argmax(model(x).numpy(), -1) == y
    assert right.sum() >= 3 and np.all(norms[~right] == 0)
    assert np.median(norms[right]) > 0.5 * epsilon
    # The random net is easy to fool at these budgets: the attack must notice.
    fooled = np.argmax(model(x_adv).numpy(), -1) != y
    assert fooled.mean() > 0.9


def test_apgd_traces_under_xla_and_matches_the_uncompiled_run(mnist_sample):
    x = mnist_sample[2][:16]
    model = small_conv_net(seed=1)
    y = predicted(model, x)
    for name in ("apgd-ce", "apgd-dlr", "apgd-t"):
        kwargs = dict(epsilon=0.01, num_steps=12, random_start=False)
        if name == "apgd-t":
            kwargs["num_target_classes"] = 2
        eager = attacks.get(name, jit_compile=False, **kwargs)(model, x, y).numpy()
        xla = attacks.get(name, jit_compile=True, **kwargs)(model, x, y).numpy()
        broken = fooled(model, eager, y)
        assert 0 < broken.sum() < len(x), name
        np.testing.assert_array_equal(fooled(model, xla, y), broken)
        # XLA's logits differ from the TF kernels' in the last bit. On a fooled point
        # the DLR losses can be flat (y ranked third: DLR = 1 exactly), so the sign of
        # rounding noise steers the rest of the run and the last fooling point differs;
        # every other point must come out the same.
        np.testing.assert_allclose(xla[~broken], eager[~broken], atol=1e-6)
        if name == "apgd-ce":
            np.testing.assert_allclose(xla, eager, atol=1e-6)
    compiled = tf.function(
        lambda a, b: attacks.APGD(epsilon=0.05, num_steps=3, norm="l2").perturb(model, a, b),
        jit_compile=True,
    )
    assert compiled(x, y).shape == x.shape


# -- configuration ----------------------------------------------------------------------------
@pytest.mark.parametrize("name,kwargs,cls,loss", [
    ("apgd", {"epsilon": 0.5, "norm": "l2", "loss": "dlr", "num_steps": 7, "seed": 3},
     attacks.APGD, "dlr"),
    ("apgd-ce", {"epsilon": 0.3}, attacks.APGDCE, "ce"),
    ("apgd-dlr", {"epsilon": 0.1, "num_restarts": 3}, attacks.APGDDLR, "dlr"),
    ("apgd-t", {"epsilon": 0.1, "num_target_classes": 3, "random_start": False},
     attacks.APGDTargeted, "dlr-targeted"),
])
def test_config_round_trip(name, kwargs, cls, loss):
    attack = attacks.get(name, **kwargs)
    assert type(attack) is cls and attack.loss == loss and attack.registry_name == name
    restored = attacks.get(attacks.serialize(attack))
    assert type(restored) is cls
    assert restored.get_config() == attack.get_config()


def test_defaults_follow_the_paper():
    attack = attacks.get("apgd-t", epsilon=0.3)
    assert (attack.num_steps, attack.num_restarts, attack.num_target_classes) == (100, 1, 9)
    assert not attack.targeted and attack.random_start
    assert (attacks.APGD(epsilon=0.3).num_steps, attacks.APGD(epsilon=0.3).loss) == (100, "ce")


def test_apgd_t_refuses_two_classes():
    model = two_class_model()
    x = np.full((2, 2, 2, 1), 0.5, "float32")
    with pytest.raises(ValueError, match="Expected at least 3 classes for a targeted attack. "
                                         "Received: 2 classes"):
        attacks.APGDTargeted(epsilon=0.1, num_steps=2)(model, x, np.array([0, 1]))
    with pytest.raises(ValueError, match="at least 3 classes for the DLR loss"):
        attacks.get("apgd-dlr", epsilon=0.1, num_steps=2)(model, x, np.array([0, 1]))
    three = linear_classifier(np.random.default_rng(0).normal(size=(4, 3)))
    with pytest.raises(ValueError, match="at least 4 classes.*Received: 3 classes"):
        attacks.APGDTargeted(epsilon=0.1, num_steps=2)(three, x, np.array([0, 1]))


@pytest.mark.parametrize(
    "name,kwargs,match",
    [
        ("apgd", {"epsilon": -1.0}, "epsilon=-1.0"),
        ("apgd", {"epsilon": 0.3, "loss": "hinge"}, "loss='hinge'"),
        ("apgd", {"epsilon": 0.3, "loss": "dlr-targeted"}, "loss='dlr-targeted'"),
        ("apgd", {"epsilon": 0.3, "norm": "l1"}, "norm='l1'"),
        ("apgd", {"epsilon": 0.3, "num_steps": -2}, "num_steps=-2"),
        ("apgd", {"epsilon": 0.3, "num_restarts": 0}, "num_restarts=0"),
        ("apgd-ce", {"epsilon": -0.5}, "epsilon=-0.5"),
        ("apgd-ce", {"epsilon": 0.3, "loss": "dlr"}, "loss='dlr'"),
        ("apgd-t", {"epsilon": -1.0}, "epsilon=-1.0"),
        ("apgd-t", {"epsilon": 0.3, "num_target_classes": 0}, "num_target_classes=0"),
        ("apgd-t", {"epsilon": 0.3, "targeted": True}, "targeted=True"),
        ("apgd-t", {"epsilon": 0.3, "loss": "ce"}, "loss='ce'"),
    ],
)
def test_bad_configuration_is_refused_with_the_argument_named(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        attacks.get(name, **kwargs)


# -- strength on a trained model --------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(mnist_sample, standard_mlp):
    """The shared standard MLP (conftest) and 200 test digits."""
    return standard_mlp, mnist_sample[2][:200], mnist_sample[3][:200]


def test_apgd_breaks_a_standard_model_at_linf_0_3(trained):
    model, x, y = trained
    assert np.mean(~fooled(model, x, y)) > 0.8  # the model learned something
    pgd = fooled(model, attacks.PGD(epsilon=0.3, num_steps=20, step_size=2.5 * 0.3 / 20)(
        model, x, y), y)
    for name in ("apgd-ce", "apgd-dlr", "apgd-t"):
        broken = fooled(model, attacks.get(name, epsilon=0.3, num_steps=50)(model, x, y), y)
        assert np.mean(~broken) <= 0.01, name
        assert np.mean(~broken) <= np.mean(~pgd), name


def test_apgd_is_never_weaker_than_pgd_and_fgsm_never_stronger(trained):
    # At eps = 0.08 about a fifth of the points survive PGD-20, so the order shows.
    model, x, y = trained
    eps = 0.08
    pgd = fooled(model, attacks.PGD(epsilon=eps, num_steps=20, step_size=2.5 * eps / 20)(
        model, x, y), y)
    fgsm = fooled(model, attacks.FGSM(epsilon=eps)(model, x, y), y)
    apgd = fooled(model, attacks.get("apgd-ce", epsilon=eps, num_steps=50)(model, x, y), y)
    assert 0.05 < np.mean(~pgd) < 0.5
    assert np.mean(~apgd) <= np.mean(~pgd) <= np.mean(~fgsm)
    assert np.mean(~apgd) < np.mean(~fgsm)


def test_more_restarts_and_targets_never_break_fewer_points(trained):
    # The first restart (and the first target) draws the same start as the shorter run,
    # and a point once broken stays broken.
    model, x, y = trained
    eps = 0.05
    one = fooled(model, attacks.APGD(epsilon=eps, num_steps=10, seed=4)(model, x, y), y)
    three = fooled(model, attacks.APGD(epsilon=eps, num_steps=10, num_restarts=3, seed=4)(
        model, x, y), y)
    assert np.all(three[one]) and three.sum() >= one.sum() > 0
    first = fooled(model, attacks.APGDTargeted(epsilon=eps, num_steps=10, num_target_classes=1)(
        model, x, y), y)
    more = fooled(model, attacks.APGDTargeted(epsilon=eps, num_steps=10, num_target_classes=3)(
        model, x, y), y)
    assert np.all(more[first]) and more.sum() > first.sum() > 0
