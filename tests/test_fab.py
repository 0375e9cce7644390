"""FAB-T against closed-form answers: the box-constrained projection and linear models."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import linear_classifier
from tfrobust import attacks
from tfrobust.attacks.fab import project_onto_hyperplane


def norm_of(delta, norm):
    delta = np.asarray(delta).reshape(len(delta), -1)
    return np.abs(delta).max(1) if norm == "linf" else np.linalg.norm(delta, axis=1)


def project(points, w, b, norm):
    return project_onto_hyperplane(
        tf.constant(points, tf.float32), tf.constant(w, tf.float32), tf.constant(b, tf.float32),
        norm,
    ).numpy()


# -- the projection (Eq. 5 of the paper) ---------------------------------------------------


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_without_active_box_is_the_closed_form(norm):
    rng = np.random.default_rng(0)
    x = rng.uniform(0.4, 0.6, (6, 9))
    w = rng.normal(size=(6, 9))
    # Points on both sides of the hyperplane, close enough that the box [0, 1] stays inactive.
    b = -(w * x).sum(1) + rng.normal(scale=0.1, size=6)
    value = (w * x).sum(1) + b
    if norm == "l2":
        expected = -value[:, None] * w / (w ** 2).sum(1, keepdims=True)
    else:
        expected = -value[:, None] * np.sign(w) / np.abs(w).sum(1, keepdims=True)
    assert np.all((x + expected > 0) & (x + expected < 1))
    np.testing.assert_allclose(project(x, w, b, norm), expected, atol=1e-6)


def linf_projection_float64(point, w, b):
    """The L-inf projection onto {w.z + b = 0} inside [0, 1]^D, exactly, in float64: walk the
    breakpoints (each coordinate's room to its face) in sorted order until the gain
    sum_i |w_i| min(lam, room_i) covers |w.x + b|."""
    value = w @ point + b
    direction = -np.sign(value) * np.sign(w)
    room = np.where(direction > 0, 1.0 - point, point)
    need, abs_w = abs(value), np.abs(w)
    if abs_w @ room < need:
        return direction * room  # out of reach: every coordinate to its face
    lam, gained, slope = 0.0, 0.0, abs_w.sum()
    for i in np.argsort(room):
        if gained + slope * (room[i] - lam) >= need:
            break
        gained += slope * (room[i] - lam)
        lam, slope = room[i], slope - abs_w[i]
    lam += (need - gained) / slope
    return direction * np.minimum(lam, room)


def test_linf_projection_by_bisection_is_the_exact_projection_to_float32_rounding():
    """The L-inf projection bisects its multiplier instead of sorting the breakpoints: on
    random points (inside the box and on its faces), sparse normals, offsets from 0.01 to 100
    and points on the hyperplane, it is the float64 sort solution to 2e-6."""
    rng = np.random.default_rng(3)
    worst, cases = 0.0, 0
    for trial in range(60):
        dims = int(rng.integers(1, 800))
        points = rng.uniform(size=(8, dims))
        if trial % 3 == 0:
            points = np.round(points)
        w = rng.normal(size=(8, dims)) * (rng.uniform(size=(8, dims)) < rng.uniform(0.05, 1))
        b = rng.normal(size=8) * rng.choice([0.01, 1.0, 10.0, 100.0])
        if trial % 5 == 0:
            b[:2] = -(w[:2] * points[:2]).sum(1)
        points, w, b = (a.astype(np.float32) for a in (points, w, b))
        delta = project(points, w, b, "linf")
        for k in range(8):
            exact = linf_projection_float64(*(a[k].astype(np.float64) for a in (points, w, b)))
            worst = max(worst, np.abs(delta[k] - exact).max())
            cases += 1
    assert cases == 480 and worst < 2e-6


def brute_force_min_norm_3d(point, w, b, norm, grid=1201):
    """Smallest distance from `point` to {w.z + b = 0} ∩ [0, 1]^3 by a dense grid on the plane."""
    normal = w / np.linalg.norm(w)
    basis = np.linalg.svd(normal[None])[2][1:]  # (2, 3): orthonormal vectors spanning the plane
    # Centre the grid on the cube centre's projection: the cube's slice lies within 0.87 of it.
    centre = np.full(3, 0.5)
    origin = centre - (w @ centre + b) / (w @ w) * w
    s = np.linspace(-0.9, 0.9, grid)
    grid_s, grid_t = np.meshgrid(s, s)
    z = origin + grid_s.reshape(-1, 1) * basis[0] + grid_t.reshape(-1, 1) * basis[1]
    z = z[np.all((z >= 0) & (z <= 1), axis=1)]
    if not len(z):
        return None
    return norm_of(z - point, norm).min()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_with_active_box_matches_a_grid_search(norm):
    rng = np.random.default_rng(1)
    checked = box_active = 0
    for _ in range(10):
        point = rng.uniform(0.0, 1.0, 3)
        w = rng.normal(size=3)
        # Far enough from the point that the box constrains the answer in most cases.
        b = -(w @ point) + rng.choice([-1, 1]) * rng.uniform(0.5, 1.2) * np.abs(w).sum() / 2
        delta = project(point[None], w[None], [b], norm)[0]
        best = brute_force_min_norm_3d(point, w, b, norm)
        if best is None:
            # Out of reach: the box corner that moves w.z furthest towards the plane.
            corner = np.where(np.sign(w) == -np.sign(w @ point + b), 1.0, 0.0)
            np.testing.assert_allclose(point + delta, corner, atol=1e-6)
            continue
        checked += 1
        value = w @ point + b
        free = -value * (w / (w @ w) if norm == "l2" else np.sign(w) / np.abs(w).sum())
        box_active += not np.all((point + free >= 0) & (point + free <= 1))
        assert np.all((point + delta >= -1e-6) & (point + delta <= 1 + 1e-6))
        assert abs(w @ (point + delta) + b) < 1e-5
        # The grid spacing is 1.5e-3: its best is a few spacings above the optimum at most.
        assert norm_of(delta[None], norm)[0] == pytest.approx(best, abs=3e-3)
        assert norm_of(delta[None], norm)[0] <= best + 1e-5
    assert checked >= 5 and box_active >= 2  # the unconstrained closed form would fail these


# -- FAB-T on a 3-class linear model --------------------------------------------------------

WEIGHTS = np.array([[0.3, -0.2, 0.1], [-0.1, 0.4, -0.3], [0.2, 0.1, -0.2], [-0.3, 0.2, 0.4]])
BIAS = np.array([0.08, 0.0, 0.03])


def linear_setup():
    model = linear_classifier(WEIGHTS, BIAS)
    offsets = np.random.default_rng(2).uniform(-0.1, 0.1, (6, 2, 2, 1))
    x = (0.5 + offsets).astype("float32")
    logits = model(x).numpy()
    return model, x, logits.argmax(1), np.argsort(-logits, axis=1), logits


def boundary_distance(x, y, target, logits, norm):
    """Closed form |f_t - f_y| / ||w_t - w_y||_dual for a linear model."""
    rows = np.arange(len(x))
    dual = np.abs if norm == "linf" else np.square
    dw = WEIGHTS[:, target].T - WEIGHTS[:, y].T  # (B, D)
    scale = dual(dw).sum(1) if norm == "linf" else np.sqrt(dual(dw).sum(1))
    return np.abs(logits[rows, target] - logits[rows, y]) / scale


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_t_on_a_linear_model_finds_the_closed_form_boundary_point(norm):
    model, x, y, ranked, logits = linear_setup()
    distance = boundary_distance(x, y, ranked[:, 1], logits, norm)
    assert np.all(distance > 0.02) and np.all(0.6 + 1.1 * distance < 1.0)  # box inactive
    # One step lands eta * distance away: an eta just above 1 makes it the exact projection.
    attack = attacks.FAB(epsilon=0.5, norm=norm, num_steps=2, num_target_classes=1, eta=1.0005)
    x_adv = attack(model, x, y).numpy()
    assert np.all(model(x_adv).numpy().argmax(1) != y)
    np.testing.assert_allclose(norm_of(x_adv - x, norm), distance, rtol=1e-3)
    # With both runner-up classes the attack keeps the closer boundary.
    both = attacks.FAB(epsilon=0.5, norm=norm, num_steps=2, num_target_classes=9, eta=1.0005)
    nearest = np.minimum(distance, boundary_distance(x, y, ranked[:, 2], logits, norm))
    np.testing.assert_allclose(norm_of(both(model, x, y).numpy() - x, norm), nearest, rtol=1e-3)
    # Default overshoot eta = 1.05: the backward steps settle about 0.5% outside the boundary.
    default = attacks.FAB(epsilon=0.5, norm=norm, num_steps=50, num_target_classes=1)
    ratio = norm_of(default(model, x, y).numpy() - x, norm) / distance
    assert np.all((ratio > 1.0) & (ratio < 1.01))


def test_fab_t_returns_the_clean_point_when_epsilon_is_below_the_distance():
    model, x, y, ranked, logits = linear_setup()
    distance = boundary_distance(x, y, ranked[:, 1], logits, "linf")
    epsilon = float(np.median(distance))
    attack = attacks.FAB(epsilon=epsilon, num_steps=5, num_target_classes=1, eta=1.0005)
    x_adv = attack(model, x, y).numpy()
    far = distance * 1.0005 > epsilon
    assert far.any() and (~far).any()
    np.testing.assert_array_equal(x_adv[far], x[far])
    assert np.all(model(x_adv[~far]).numpy().argmax(1) != y[~far])


# -- real digits ----------------------------------------------------------------------------


def random_conv_net(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(8, 3, strides=2),
                             keras.layers.ReLU(), keras.layers.Flatten(), keras.layers.Dense(10)])


@pytest.mark.parametrize("norm,epsilon", [("linf", 0.1), ("l2", 1.0)])
def test_fab_t_stays_in_budget_and_range_on_real_digits(mnist_sample, norm, epsilon):
    x = mnist_sample[2][:48]
    model = random_conv_net()
    # An untrained net is mostly wrong: label the digits with its predictions, except
    # eight points given a wrong label, which must come back unchanged.
    y = model(x).numpy().argmax(1)
    y[:8] = (y[:8] + 1) % 10
    attack = attacks.FAB(epsilon=epsilon, norm=norm, num_steps=10, num_target_classes=3)
    x_adv = attack(model, x, y).numpy()
    assert np.all(np.isfinite(x_adv))
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    norms = norm_of(x_adv - x, norm)
    assert norms.max() <= epsilon * (1 + 1e-5)
    # Every changed point is misclassified; unchanged ones are the clean images.
    changed = norms > 0
    predicted = model(x_adv).numpy().argmax(1)
    assert changed.sum() >= 20 and np.all(predicted[changed] != y[changed])
    np.testing.assert_array_equal(x_adv[:8], x[:8])


def test_restarts_never_lengthen_the_perturbation(mnist_sample):
    # Run 0 of every target is the same deterministic walk from x, and later runs
    # only replace a point by a closer one, so more restarts give norms <= fewer.
    x = mnist_sample[2][:32]
    model = random_conv_net(seed=1)
    y = model(x).numpy().argmax(1)
    one = attacks.FAB(epsilon=0.3, num_steps=8, num_target_classes=2, num_restarts=1, seed=3)
    two = attacks.FAB(epsilon=0.3, num_steps=8, num_target_classes=2, num_restarts=2, seed=3)
    norms_one = norm_of(one(model, x, y).numpy() - x, "linf")
    norms_two = norm_of(two(model, x, y).numpy() - x, "linf")
    fooled_one = norms_one > 0
    assert fooled_one.sum() >= 20
    assert np.all(norms_two[fooled_one] <= norms_one[fooled_one] + 1e-6)


def test_fab_t_is_strong_on_a_trained_mnist_model(mnist_sample):
    x_train, y_train, x_test, y_test = mnist_sample
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((28, 28, 1)), keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
        keras.layers.Conv2D(32, 3, strides=2, activation="relu"), keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train[:2000], y_train[:2000], epochs=2, batch_size=64, verbose=0)
    x, y = x_test[:100], y_test[:100]
    clean = model(x).numpy().argmax(1) == y
    assert clean.mean() > 0.7
    fab = attacks.FAB(epsilon=0.3, num_steps=30, num_target_classes=3)
    x_adv = fab(model, x, y).numpy()
    robust = model(x_adv).numpy().argmax(1) == y
    assert robust.mean() <= 0.01  # measured 0.00 (clean 0.84)
    # FAB returns minimal perturbations: thresholding them gives its accuracy at any
    # smaller epsilon, which must match PGD's there.
    norms = np.where(robust, np.inf, norm_of(x_adv - x, "linf"))
    fab_accuracy = np.mean(clean & (norms > 0.08))
    pgd = attacks.PGD(epsilon=0.08, num_steps=50, step_size=0.008)
    pgd_accuracy = np.mean(model(pgd(model, x, y)).numpy().argmax(1) == y)
    assert fab_accuracy <= pgd_accuracy + 0.02  # measured 0.28 vs 0.28 with full FAB-T


# -- graph, configuration, errors -----------------------------------------------------------


def test_fab_t_traces_under_xla():
    model, x, y, _, _ = linear_setup()
    config = dict(epsilon=0.5, num_steps=3, num_target_classes=2, num_restarts=2)
    eager = attacks.FAB(jit_compile=False, **config)(model, x, y, seed=[1, 2]).numpy()
    attack = attacks.FAB(**config)
    compiled = tf.function(lambda a, b: attack.perturb(model, a, b, tf.constant([1, 2])),
                           jit_compile=True)
    np.testing.assert_allclose(compiled(x, y).numpy(), eager, atol=1e-5)


def test_config_round_trip():
    attack = attacks.FAB(epsilon=1.5, norm="l2", num_steps=20, num_restarts=2,
                         num_target_classes=4, alpha_max=0.2, eta=1.1, backward_step=0.8, seed=4)
    restored = attacks.get(attacks.serialize(attack))
    assert type(restored) is attacks.FAB
    assert restored.get_config() == attack.get_config()
    assert not restored.targeted
    assert type(attacks.get("fab-t", epsilon=0.1)) is attacks.FAB


def test_two_class_model_is_refused():
    model = linear_classifier(np.ones((4, 2)))
    attack = attacks.FAB(epsilon=0.1, num_steps=1)
    with pytest.raises(ValueError, match="at least 3 classes.*Received: 2 classes"):
        attack(model, np.full((1, 2, 2, 1), 0.5, "float32"), np.array([0]))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"epsilon": -1.0}, "epsilon=-1.0"),
        ({"epsilon": 0.3, "norm": "l1"}, "norm='l1'"),
        ({"epsilon": 0.3, "num_steps": -1}, "num_steps=-1"),
        ({"epsilon": 0.3, "num_restarts": 0}, "num_restarts=0"),
        ({"epsilon": 0.3, "num_target_classes": 0}, "num_target_classes=0"),
        ({"epsilon": 0.3, "alpha_max": 1.5}, "alpha_max=1.5"),
        ({"epsilon": 0.3, "eta": 0.9}, "eta=0.9"),
        ({"epsilon": 0.3, "backward_step": -0.1}, "backward_step=-0.1"),
        ({"epsilon": 0.3, "targeted": True}, "targeted=True"),
    ],
)
def test_bad_configuration_is_refused_with_the_argument_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        attacks.FAB(**kwargs)


def test_bad_inputs_are_refused_with_the_argument_named():
    model, _, _, _, _ = linear_setup()
    attack = attacks.FAB(epsilon=0.1, num_steps=1)
    with pytest.raises(ValueError, match="dtype uint8"):
        attack(model, np.zeros((1, 2, 2, 1), "uint8"), np.array([0]))
    with pytest.raises(ValueError, match="one label per image"):
        attack(model, np.zeros((2, 2, 2, 1), "float32"), np.array([0]))


def test_a_file_saved_with_fabs_old_beta_loads_as_its_backward_step():
    """FAB's backward step was called `beta` (a loss weight everywhere else in tfrobust)."""
    config = attacks.serialize(attacks.FAB(epsilon=0.3, backward_step=0.7))
    assert config["config"]["backward_step"] == 0.7 and "beta" not in config["config"]
    config["config"]["beta"] = config["config"].pop("backward_step")
    assert attacks.get(config).backward_step == 0.7
