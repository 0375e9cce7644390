"""`Attack.stop_when_fooled`: attacks drop an example at the step that fools it.

The passes are counted by a model that adds its batch size to a variable on every
call, so what the attacks spend is measured, not assumed.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import two_class_model
from tfrobust import attacks


class Counted:
    """A model's logits, counting the examples it is called on (forward passes)."""

    def __init__(self, model):
        self.model = model
        self.examples = tf.Variable(0, dtype=tf.int64)

    def __call__(self, x):
        self.examples.assign_add(tf.cast(tf.shape(x)[0], tf.int64))
        return self.model(x, training=False)

    def take(self):
        count, _ = int(self.examples.numpy()), self.examples.assign(0)
        return count


def run(attack, model, x, y, stop):
    attack.stop_when_fooled = stop
    counted = Counted(model)
    x_adv = attack(counted, x, y).numpy()
    return x_adv, counted.take()


def test_pgd_stops_each_example_at_the_closed_form_step():
    # A 2-class linear model: each L-inf step of size s lowers the margin z_y - z_other by
    # exactly s * ||w_other - w_y||_1 while no bound binds (here x moves 0.2 < eps = 0.3,
    # inside [0, 1]), so example i is first fooled at step k_i = floor(m_i / (s D)) + 1.
    model = two_class_model(seed=1)
    w, b = model.get_layer("linear").get_weights()
    rng = np.random.default_rng(0)
    x = rng.uniform(0.35, 0.65, size=(40, 2, 2, 1)).astype("float32")
    logits = x.reshape(40, -1) @ w + b
    y = np.argmax(logits, -1)
    margin = np.abs(logits[:, 0] - logits[:, 1])
    d = np.abs(w[:, 0] - w[:, 1]).sum()
    s, steps = 0.02, 10
    ratio = margin / (s * d)
    assert np.min(np.abs(ratio - np.round(ratio))) > 1e-3  # no example on a boundary
    k = np.floor(ratio).astype(int) + 1
    assert 0 < np.sum(k < steps) < 40  # some are fooled within the run, some never

    attack = attacks.PGD(epsilon=0.3, num_steps=steps, step_size=s, random_start=False)
    x_adv, passes = run(attack, model, x, y, stop=True)
    direction = np.sign(np.where(y[:, None] == 0, w[:, 1] - w[:, 0], w[:, 0] - w[:, 1]))
    taken = np.minimum(k, steps)[:, None]  # a fooled example keeps its first fooling point
    np.testing.assert_allclose(x_adv.reshape(40, -1), x.reshape(40, -1) + taken * s * direction,
                               atol=1e-5)
    # Forward passes: example i is in the batch for steps 0..k_i (k_i + 1 passes, the last
    # one finds it fooled), else for all of them; plus the evaluation's clean pass.
    assert passes == np.sum(np.minimum(k + 1, steps)) + 40
    _, full = run(attacks.PGD(epsilon=0.3, num_steps=steps, step_size=s, random_start=False),
                  model, x, y, stop=False)
    assert full == 40 * steps + 40


@pytest.mark.parametrize("unroll_up_to", [0, 100])
def test_looped_and_unrolled_pgd_stop_the_same_way(unroll_up_to):
    model = two_class_model(seed=1)
    rng = np.random.default_rng(1)
    x = rng.uniform(0.35, 0.65, size=(16, 2, 2, 1)).astype("float32")
    y = np.argmax(model(x).numpy(), -1)
    outputs = []
    for stop in (False, True):
        attack = attacks.PGD(epsilon=0.3, num_steps=12, step_size=0.02, seed=3)
        attack.unroll_up_to = unroll_up_to
        outputs.append(run(attack, model, x, y, stop))
    (x_full, full), (x_stop, stopped) = outputs
    fooled_full = np.argmax(model(x_full).numpy(), -1) != y
    fooled_stop = np.argmax(model(x_stop).numpy(), -1) != y
    assert np.all(fooled_stop[fooled_full])  # fooled at some step includes fooled at the last
    assert stopped < full
    np.testing.assert_allclose(x_stop[~fooled_stop], x_full[~fooled_stop], atol=1e-6)


@pytest.fixture(scope="module")
def trained(mnist_sample, standard_mlp):
    """The shared standard MLP (conftest), and 100 test digits it gets right."""
    x_test, y_test = mnist_sample[2][:120], mnist_sample[3][:120]
    right = np.argmax(standard_mlp.predict(x_test, verbose=0), -1) == y_test
    return standard_mlp, x_test[right][:100], y_test[right][:100]


@pytest.mark.parametrize("name, epsilon, kwargs", [
    ("apgd-ce", 0.3, {}),
    ("apgd-dlr", 0.06, {}),
    ("apgd", 0.06, {"num_restarts": 2}),
    ("apgd-t", 0.06, {"num_target_classes": 3}),
])
def test_apgd_breaks_the_same_examples_for_fewer_passes(trained, name, epsilon, kwargs):
    model, x, y = trained
    outputs = [run(attacks.get(name, epsilon=epsilon, num_steps=30, seed=5, **kwargs),
                   model, x, y, stop) for stop in (False, True)]
    (x_full, full), (x_stop, stopped) = outputs
    fooled_full = np.argmax(model(x_full).numpy(), -1) != y
    fooled_stop = np.argmax(model(x_stop).numpy(), -1) != y
    np.testing.assert_array_equal(fooled_stop, fooled_full)
    assert 0 < fooled_full.sum()
    # Survivors follow the same trajectory. Where the matmul kernels' rounding depends on the
    # batch size (oneDNN on an AMD EPYC: 1e-7 between a batch of 100 and its first 37), a
    # step's sign flips now and then and a pixel ends a step away: at most 1 pixel in 1,000
    # differs, never a whole example (a survivor wrongly attacked differs in most of them).
    differs = np.abs(x_stop[~fooled_stop] - x_full[~fooled_stop]) > 1e-5
    if len(differs):
        assert differs.mean() <= 1e-3
        assert differs.reshape(len(differs), -1).mean(1).max() <= 0.02
    assert np.abs(x_stop - x).max() <= epsilon + 1e-6
    # Full: every example in every pass. Stopped: the survivors' share of them, plus each
    # broken example's passes up to its break.
    runs = kwargs.get("num_restarts", 1) * kwargs.get("num_target_classes", 1)
    assert full >= runs * 31 * len(x)
    alive = 1 - fooled_full.mean()
    print(f"\n{name} eps {epsilon}: {fooled_full.mean():.2f} fooled, passes {stopped} of {full}")
    assert stopped < full * (alive + 0.5 * (1 - alive))
    if name == "apgd-ce":  # eps 0.3 on a standard model: all broken within a few steps
        assert fooled_full.all() and stopped < 0.2 * full


def test_stop_when_fooled_is_not_part_of_the_config():
    attack = attacks.get("apgd-ce", epsilon=0.3)
    attack.stop_when_fooled = True
    assert "stop_when_fooled" not in attacks.serialize(attack)["config"]
    assert attacks.get(attacks.serialize(attack)).stop_when_fooled is False


def test_pgd_restarts_attack_only_what_no_run_has_fooled(trained):
    model, x, y = trained
    outputs = [run(attacks.PGD(epsilon=0.06, num_steps=10, num_restarts=3, seed=2),
                   model, x, y, stop) for stop in (False, True)]
    (x_full, full), (x_stop, stopped) = outputs
    fooled_full = np.argmax(model(x_full).numpy(), -1) != y
    fooled_stop = np.argmax(model(x_stop).numpy(), -1) != y
    assert 0 < fooled_full.sum() < len(y)
    assert np.all(fooled_stop[fooled_full])
    assert np.abs(x_stop - x).max() <= 0.06 + 1e-6
    assert full == 3 * 10 * len(x) + 3 * len(x) + len(x)  # runs, their scores, the clean pass
    assert stopped < full * (1 - fooled_full.mean() / 2)


@pytest.mark.parametrize("name, kwargs", [("pgd", {"num_steps": 5}), ("pgd", {"num_steps": 50}),
                                          ("apgd-ce", {"num_restarts": 2}),
                                          ("apgd-t", {"num_target_classes": 2})])
def test_a_batch_fooled_to_the_last_example_stops_before_an_empty_pass(name, kwargs):
    # oneDNN convolutions refuse a batch of 0 ("input depth must be evenly divisible by
    # filter depth"): once every example is fooled, no pass may run on what is left.
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(10)])
    x = np.random.default_rng(0).uniform(size=(6, 8, 8, 1)).astype("float32")
    y = np.argmax(model(x).numpy(), -1)
    attack = attacks.get(name, epsilon=1.0, seed=1, **kwargs)  # the whole box: all fooled
    x_adv, _ = run(attack, model, x, y, stop=True)
    assert np.all(np.argmax(model(x_adv).numpy(), -1) != y)


def test_fab_t_runs_each_target_only_on_points_still_robust(trained):
    model, x, y = trained
    outputs = [run(attacks.get("fab-t", epsilon=0.08, num_steps=10, num_target_classes=3,
                               seed=1), model, x, y, stop) for stop in (False, True)]
    (x_full, full), (x_stop, stopped) = outputs
    fooled_full = np.argmax(model(x_full).numpy(), -1) != y
    fooled_stop = np.argmax(model(x_stop).numpy(), -1) != y
    assert 0 < fooled_full.sum() < len(y)
    # A point broken within epsilon by one target is broken either way; later targets only
    # shorten its perturbation, which an evaluation at radius epsilon does not count.
    np.testing.assert_array_equal(fooled_stop, fooled_full)
    assert np.abs(x_stop - x).max() <= 0.08 + 1e-6
    # Each of the 3 targets: 10 steps of a gradient and a forward pass per point, plus
    # the clean passes; points broken by the first target skip the other two.
    assert full == 3 * 10 * 2 * len(x) + 2 * len(x)
    assert stopped < full
