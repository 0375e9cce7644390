"""The Square attack: its schedule by hand, its geometry, closed-form optima, budgets, strength."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import linear_classifier
from tfrobust import attacks
from tfrobust.attacks import square


def compiled(attack, model, jit_compile=False):
    """`perturb_and_count` in a graph (eagerly the loop would run op by op), on NumPy arrays."""
    fn = tf.function(lambda a, b: attack.perturb_and_count(model, a, b), jit_compile=jit_compile)

    def call(x, y):
        x_adv, queries = fn(tf.constant(x), tf.constant(y))
        return x_adv.numpy(), queries.numpy()

    return call


def run(attack, model, x, y):
    return compiled(attack, model)(x, y)


def gradient_free(model):
    """`model` behind a gradient that fails the test if anyone asks for it."""

    @tf.custom_gradient
    def forward(x):
        def grad(upstream, variables=None):
            raise AssertionError("the Square attack asked for a gradient")

        return model(x), grad

    return forward


def robust_linear_model(w, x, epsilon):
    """A 2-class linear model whose class 0 survives even the best L-inf perturbation of x.

    Returns the model, the optimal corner clip(x + eps * sign(w_1 - w_0)) (B, D) and
    w_1 - w_0 (D,), along which the margin z_1 - z_0 grows.
    """
    direction = w[:, 1] - w[:, 0]
    corner = np.clip(x.reshape(len(x), -1) + epsilon * np.sign(direction), 0.0, 1.0)
    bias = [0.0, -np.max(corner @ direction) - 1.0]
    return linear_classifier(w, bias, input_shape=x.shape[1:]), corner, direction


def test_p_schedule_halves_at_the_documented_iterations():
    # By hand: it = i * 10000 // num_queries; p halves once it passes 10, 50, 200, 500,
    # 1000, 2000, 4000, 6000, 8000 (so at num_queries=5000, it = 2i).
    p0 = 0.8
    at_10000 = {0: p0, 10: p0, 11: p0 / 2, 50: p0 / 2, 51: p0 / 4, 200: p0 / 4, 201: p0 / 8,
                500: p0 / 8, 501: p0 / 16, 1000: p0 / 16, 1001: p0 / 32, 2000: p0 / 32,
                2001: p0 / 64, 4000: p0 / 64, 4001: p0 / 128, 6000: p0 / 128,
                6001: p0 / 256, 8000: p0 / 256, 8001: p0 / 512, 9999: p0 / 512}
    at_5000 = {0: p0, 5: p0, 6: p0 / 2, 25: p0 / 2, 26: p0 / 4, 100: p0 / 4, 101: p0 / 8,
               250: p0 / 8, 251: p0 / 16, 500: p0 / 16, 501: p0 / 32, 1000: p0 / 32,
               1001: p0 / 64, 2000: p0 / 64, 2001: p0 / 128, 3000: p0 / 128,
               3001: p0 / 256, 4000: p0 / 256, 4001: p0 / 512, 4999: p0 / 512}
    for num_queries, expected in [(10000, at_10000), (5000, at_5000)]:
        iterations = np.array(list(expected), "int32")
        p = square.p_selection(iterations, p0, num_queries).numpy()
        np.testing.assert_array_equal(p, np.array(list(expected.values())))
    # Window sides on 28 x 28 images, round(sqrt(p * 784)) for p = 0.8 / 2^k, k = 0..9;
    # L2 windows are odd and at least 3.
    p = p0 / 2.0 ** np.arange(10)
    linf = [square._square_side(tf.constant(v, tf.float64), 28, 28, "linf").numpy() for v in p]
    l2 = [square._square_side(tf.constant(v, tf.float64), 28, 28, "l2").numpy() for v in p]
    assert linf == [25, 18, 13, 9, 6, 4, 3, 2, 2, 1]
    assert l2 == [25, 19, 13, 9, 7, 5, 3, 3, 3, 3]


def rectangle(rows, cols):
    """The paper's bump: 1/(k+1)^2 added on concentric rectangles, unit norm."""
    delta = np.zeros([rows, cols])
    for k in range(max(rows // 2, cols // 2) + 1):
        delta[max(rows // 2 - k, 0):rows // 2 + k + 1,
              max(cols // 2 - k, 0):cols // 2 + k + 1] += 1.0 / (k + 1) ** 2
    return delta / np.linalg.norm(delta)


def meta_pseudo_gaussian(side):
    """The paper's window pattern: a bump on the top half minus one on the bottom half."""
    return np.concatenate([rectangle(side // 2, side),
                           -rectangle(side - side // 2, side)]) / np.sqrt(2.0)


def test_meta_pseudo_gaussian_pattern_matches_the_papers_construction():
    table = square._inverse_square_sums(16)
    for side in (3, 5, 8, 13):
        grid = tf.range(side)
        top, bottom = square._eta_parts(grid[:, None], grid[None, :], side, table)
        eta = square._combine(top, bottom, tf.norm(top), tf.norm(bottom)).numpy()
        np.testing.assert_allclose(eta, meta_pseudo_gaussian(side), atol=1e-6)


def test_l2_start_is_a_grid_of_signed_patterns_with_norm_epsilon():
    # 17 x 17 images: 5 x 5 blocks of side 3 from row/column 1; row and column 0, 16 empty.
    x = np.full((3, 17, 17, 2), 0.5, "float32")
    model = linear_classifier(np.ones((578, 2)), input_shape=(17, 17, 2))
    start, _ = run(attacks.Square(epsilon=1.0, norm="l2", num_queries=1, seed=3), model, x,
                   np.zeros(3, "int32"))
    delta = start - x
    np.testing.assert_allclose(np.linalg.norm(delta.reshape(3, -1), axis=1), 1.0, rtol=1e-5)
    assert np.all(delta[:, [0, 16]] == 0) and np.all(delta[:, :, [0, 16]] == 0)
    eta = meta_pseudo_gaussian(3)
    # 25 blocks x 2 channels of unit patterns, scaled to norm 1: each has norm 1 / sqrt(50).
    patterns = np.stack([eta, -eta, eta.T, -eta.T])
    for b in range(3):
        for i in range(5):
            for j in range(5):
                block = delta[b, 1 + 3 * i:4 + 3 * i, 1 + 3 * j:4 + 3 * j] * 5 * np.sqrt(2)
                for c in range(2):
                    errors = np.abs(patterns - block[..., c]).max(axis=(1, 2))
                    assert errors.min() < 1e-5, (b, i, j, c)


def test_linf_start_is_vertical_stripes_of_plus_minus_epsilon():
    x = np.full((4, 6, 5, 3), 0.5, "float32")
    model = linear_classifier(np.ones((90, 2)), input_shape=(6, 5, 3))
    x_adv, queries = run(attacks.Square(epsilon=0.25, num_queries=1, seed=3), model, x,
                         np.zeros(4, "int32"))
    delta = x_adv - x
    np.testing.assert_allclose(np.abs(delta), 0.25, atol=1e-6)
    np.testing.assert_array_equal(delta, np.broadcast_to(delta[:, :1], delta.shape))  # along H
    signs = np.sign(delta[:, 0])  # (B, W, C): both signs drawn
    assert 0.2 < np.mean(signs > 0) < 0.8
    np.testing.assert_array_equal(queries, 1)


def test_every_query_sits_on_a_clipped_corner_and_queries_are_counted():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(48, 2))
    x = rng.uniform(size=(5, 4, 4, 3)).astype("float32")
    y = np.zeros(5, "int32")
    model, _, _ = robust_linear_model(w, x, 0.2)
    seen = []

    def record(images):
        seen.append(images.numpy())
        return model(images)

    def spy(images):
        logits = tf.py_function(record, [images], tf.float32)
        logits.set_shape([None, 2])
        return logits

    x_adv, queries = run(attacks.Square(epsilon=0.2, num_queries=30), spy, x, y)
    assert len(seen) == 30  # nothing is ever broken, so the whole budget is spent
    np.testing.assert_array_equal(queries, 30)
    upper, lower = np.clip(x + 0.2, 0, 1), np.clip(x - 0.2, 0, 1)
    for images in seen:
        assert np.all(np.isclose(images, upper, atol=1e-6) | np.isclose(images, lower, atol=1e-6))
    start = np.sign(seen[0] - x)  # x is never exactly 0 or 1: the sign survives clipping
    np.testing.assert_array_equal(start, np.broadcast_to(start[:, :1], start.shape))
    # What comes back is, per example, one of the points the model was asked about.
    for b in range(5):
        assert any(np.array_equal(images[b], x_adv[b]) for images in seen)


def test_search_stops_once_every_example_is_broken():
    # Class 0 wins by a margin smaller than any corner can take back: every example breaks.
    w = np.stack([np.zeros(16), np.full(16, 1.0)], axis=1)
    model = linear_classifier(w, [1.0, 0.0], input_shape=(4, 4, 1))
    calls = tf.Variable(0)

    def counted(images):
        calls.assign_add(1)
        return model(images)

    x = np.full((3, 4, 4, 1), 0.5, "float32")
    _, queries = run(attacks.Square(epsilon=0.1, num_queries=500, seed=1), counted, x,
                     np.zeros(3, "int32"))
    assert calls.numpy() == queries.max() < 500
    assert queries.min() >= 1


def test_broken_examples_are_not_sent_to_the_model_again():
    """Examples break at different queries; the model sees exactly the queries counted."""
    # z_0 = 8, z_1 = the sum of 16 pixels: margins 0.1, 0.3, 0.5 and 5 from a constant image;
    # at most 16 x 0.05 = 0.8 can be taken back, so the last example never breaks.
    w = np.stack([np.zeros(16), np.full(16, 1.0)], axis=1)
    model = linear_classifier(w, [8.0, 0.0], input_shape=(4, 4, 1))
    examples = tf.Variable(0)

    def counted(images):
        examples.assign_add(tf.shape(images)[0])
        return model(images)

    margins = np.array([0.1, 0.3, 0.5, 5.0], "float32")
    x = np.ones((4, 4, 4, 1), "float32") * ((8.0 - margins) / 16).reshape(4, 1, 1, 1)
    _, queries = run(attacks.Square(epsilon=0.05, num_queries=300, seed=1), counted, x,
                     np.zeros(4, "int32"))
    assert queries[3] == 300 and len(set(queries[:3])) > 1  # broken at different queries
    assert examples.numpy() == queries.sum()  # not 4 x 300


@pytest.mark.parametrize("loss,targeted", [("cw", False), ("ce", False), ("cw", True)])
def test_linf_square_reaches_the_optimal_corner_of_a_linear_model(loss, targeted):
    # For a 2-class linear model the margin is separable over pixels: its maximum over the
    # clipped epsilon-box is the corner clip(x + eps * sign(w_other - w_y)). Random search
    # with 1 x 1 windows late in the schedule must reach it exactly, without gradients.
    rng = np.random.default_rng(0)
    w = rng.normal(size=(48, 2))
    x = rng.uniform(0.1, 0.9, size=(3, 4, 4, 3)).astype("float32")
    x[1] = 0.05  # near the lower bound: the corner is clipped there
    y = np.zeros(3, "int32")
    model, corner, direction = robust_linear_model(w, x, 0.1)
    attack = attacks.Square(epsilon=0.1, num_queries=2000, loss=loss, targeted=targeted, seed=2)
    x_adv, queries = run(attack, gradient_free(model), x, 1 - y if targeted else y)
    np.testing.assert_allclose(x_adv.reshape(3, -1), corner, atol=1e-6)
    np.testing.assert_allclose(x_adv.reshape(3, -1) @ direction, corner @ direction, atol=1e-4)
    np.testing.assert_array_equal(queries, 2000)


def test_l2_square_keeps_the_budget_and_climbs_a_linear_model():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(64, 2))
    x = rng.uniform(0.3, 0.7, size=(3, 8, 8, 1)).astype("float32")
    y = np.zeros(3, "int32")
    model, _, direction = robust_linear_model(w, x, 0.5)
    start, _ = run(attacks.Square(epsilon=0.5, norm="l2", num_queries=1), model, x, y)
    x_adv, _ = run(attacks.Square(epsilon=0.5, norm="l2", num_queries=1000), gradient_free(model),
                   x, y)
    for point in (start, x_adv):  # no pixel clips here: the norm is exactly epsilon
        np.testing.assert_allclose(np.linalg.norm((point - x).reshape(3, -1), axis=1), 0.5,
                                   rtol=1e-5)
    gain = (x_adv - x).reshape(3, -1) @ direction
    best = 0.5 * np.linalg.norm(direction)  # the L2 optimum eps * |w_1 - w_0|
    assert np.all(gain > 0.5 * best), gain / best
    assert np.all(gain > (start - x).reshape(3, -1) @ direction)


@pytest.mark.parametrize("norm,epsilon", [("linf", 0.3), ("l2", 1.5)])
def test_square_stays_in_budget_and_range_on_real_digits(mnist_sample, norm, epsilon):
    x, y = mnist_sample[2][:32], mnist_sample[3][:32]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(8, 3),
                              keras.layers.ReLU(), keras.layers.Flatten(),
                              keras.layers.Dense(10)])
    x_adv, queries = run(attacks.Square(epsilon=epsilon, norm=norm, num_queries=100), model, x, y)
    assert np.all(np.isfinite(x_adv))
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    delta = (x_adv - x).reshape(len(x), -1)
    norms = np.abs(delta).max(1) if norm == "linf" else np.linalg.norm(delta, axis=1)
    assert norms.max() <= epsilon * (1 + 1e-5)
    # L2 puts norm epsilon on x + delta before clipping; on digits' black background
    # about half of it is clipped away, as in the reference.
    assert np.median(norms) > (0.99 if norm == "linf" else 0.6) * epsilon
    if norm == "linf":
        upper, lower = np.clip(x + epsilon, 0, 1), np.clip(x - epsilon, 0, 1)
        assert np.all(np.isclose(x_adv, upper, atol=1e-6) | np.isclose(x_adv, lower, atol=1e-6))
    assert 1 <= queries.min() and queries.max() <= 100


@pytest.mark.parametrize("norm,epsilon", [("linf", 0.1), ("l2", 0.5)])
def test_square_traces_under_xla(norm, epsilon):
    rng = np.random.default_rng(2)
    x = rng.uniform(size=(4, 6, 6, 2)).astype("float32")
    y = np.array([0, 1, 0, 1], "int32")
    model = linear_classifier(rng.normal(size=(72, 2)), input_shape=(6, 6, 2))
    attack = attacks.Square(epsilon=epsilon, norm=norm, num_queries=20, seed=4)
    fn = compiled(attack, model, jit_compile=True)
    x_adv, queries = fn(x, y)
    again, _ = fn(x, y)  # stateless random ops: the same seed gives the same search
    np.testing.assert_array_equal(x_adv, again)
    delta = (x_adv - x).reshape(4, -1)
    norms = np.abs(delta).max(1) if norm == "linf" else np.linalg.norm(delta, axis=1)
    assert norms.max() <= epsilon * (1 + 1e-5) and np.median(norms) > 0.5 * epsilon
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert 1 <= queries.min() and queries.max() <= 20


def test_config_round_trip():
    attack = attacks.Square(epsilon=0.5, norm="l2", num_queries=300, p_init=0.3, num_restarts=2,
                            loss="ce", seed=4)
    restored = attacks.get(attacks.serialize(attack))
    assert type(restored) is attacks.Square
    assert restored.get_config() == attack.get_config()
    assert attacks.get("square", epsilon=0.1).num_queries == 5000


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"epsilon": -0.1}, "epsilon=-0.1"),
        ({"epsilon": 0.3, "p_init": 0.0}, "p_init=0.0"),
        ({"epsilon": 0.3, "p_init": 1.5}, "p_init=1.5"),
        ({"epsilon": 0.3, "num_queries": 0}, "num_queries=0"),
        ({"epsilon": 0.3, "num_restarts": 0}, "num_restarts=0"),
        ({"epsilon": 0.3, "loss": "dlr"}, "loss='dlr'"),
        ({"epsilon": 0.3, "norm": "l1"}, "norm='l1'"),
    ],
)
def test_bad_configuration_is_refused_with_the_argument_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        attacks.Square(**kwargs)


@pytest.fixture(scope="module")
def trained_model(mnist_sample):
    x_train, y_train = mnist_sample[0][:2000], mnist_sample[1][:2000]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((28, 28, 1)),
                              keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(10)])
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, epochs=2, batch_size=64, verbose=0)
    return model


def test_square_breaks_a_standard_mnist_model(mnist_sample, trained_model, record_property):
    x, y = mnist_sample[2][:100], mnist_sample[3][:100]
    clean = np.argmax(trained_model(x), -1) == y
    x_adv, queries = run(attacks.Square(epsilon=0.3, num_queries=1000), trained_model, x, y)
    robust = clean & (np.argmax(trained_model(x_adv), -1) == y)
    record_property("clean_accuracy", float(clean.mean()))
    record_property("robust_accuracy", float(robust.mean()))
    record_property("median_queries_on_correct", float(np.median(queries[clean])))
    print(f"\nSquare linf eps=0.3, 1000 queries: clean {clean.mean():.2f}, robust "
          f"{robust.mean():.2f}, queries on correct points mean {queries[clean].mean():.1f} "
          f"median {np.median(queries[clean]):.0f} max {queries[clean].max()}")
    assert clean.mean() > 0.8
    assert robust.mean() <= 0.05


def test_a_restart_only_spends_queries_on_unbroken_examples(mnist_sample, trained_model):
    x, y = mnist_sample[2][100:300], mnist_sample[3][100:300]
    one = attacks.Square(epsilon=0.1, num_queries=20, seed=5)
    two = attacks.Square(epsilon=0.1, num_queries=20, num_restarts=2, seed=5)
    x_one, queries_one = run(one, trained_model, x, y)
    x_two, queries_two = run(two, trained_model, x, y)
    fooled_one = np.argmax(trained_model(x_one), -1) != y
    fooled_two = np.argmax(trained_model(x_two), -1) != y
    # The first restart is the single run (same first seed): what it breaks stays broken
    # and costs nothing more.
    assert np.all(fooled_two[fooled_one])
    np.testing.assert_array_equal(queries_two[fooled_one], queries_one[fooled_one])
    assert fooled_two.sum() > fooled_one.sum()
    assert np.all(queries_two[~fooled_one] > 20)


def test_squares_margin_loss_is_cw_and_old_files_load():
    """The margin loss is "cw" in every attack; files saved with Square's "margin" still load."""
    assert attacks.Square(epsilon=0.3).loss == "cw"
    config = attacks.serialize(attacks.Square(epsilon=0.3, loss="cw"))
    config["config"]["loss"] = "margin"
    assert attacks.get(config).loss == "cw"
    with pytest.raises(ValueError, match="loss='margin'"):
        attacks.Square(epsilon=0.3, loss="margin")
