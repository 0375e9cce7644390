"""Attacks in bfloat16 (`tfrobust.evaluate(precision="mixed_bfloat16")`): the copy computes
in bfloat16 with the model's weights, and every break is judged by the model itself."""

import numpy as np
import pytest
import tensorflow as tf

import tfrobust
from conftest import linear_classifier
from tfrobust import attacks
from tfrobust.evaluation import precision
from tfrobust.evaluation.runner import Runner
from tfrobust.evaluation.store import UnitStore


def test_copy_computes_in_bfloat16_with_the_same_weights():
    rng = np.random.default_rng(0)
    weights, bias = rng.normal(size=(4, 3)), rng.normal(size=3)
    model = linear_classifier(weights, bias)
    copy = precision.lower_precision_copy(model)
    dense = copy.get_layer("linear")
    assert dense.compute_dtype == "bfloat16" and dense.variable_dtype == "float32"
    np.testing.assert_array_equal(dense.get_weights()[0],
                                  model.get_layer("linear").get_weights()[0])
    x = rng.uniform(size=(64, 2, 2, 1)).astype("float32")
    exact = x.reshape(64, 4) @ weights.astype("float32") + bias.astype("float32")
    low = tf.cast(copy(x), tf.float32).numpy()
    # bfloat16 keeps 8 significant bits: each input, weight, product and partial sum is
    # rounded with relative error at most 2**-8, so the error is within a few times
    # 2**-8 of the sum of magnitudes.
    bound = 4 * 2.0 ** -8 * (np.abs(x.reshape(64, 4)) @ np.abs(weights) + np.abs(bias))
    assert np.all(np.abs(low - exact) <= bound)
    assert np.abs(low - exact).max() > 1e-4  # it really is a lower precision


def test_precision_needs_a_keras_model_and_a_known_name(mnist_sample):
    with pytest.raises(ValueError, match="Keras model for precision='mixed_bfloat16'.*function"):
        precision.lower_precision_copy(lambda x: x)
    x, y = mnist_sample[2][:8], mnist_sample[3][:8]
    with pytest.raises(ValueError, match="precision='float16'"):
        tfrobust.evaluate(linear_classifier(np.zeros((784, 10)), input_shape=(28, 28, 1)),
                          (x, y), epsilon=0.1, precision="float16", verbose=False)


def test_a_break_counts_only_if_it_fools_the_model():
    """The search sees a wrong model (its bias says every point is already broken); the
    judge is a 2-class linear model, which L-inf PGD breaks exactly where the margin is
    below epsilon * ||w_1 - w_0||_1. Every break the search claims is checked and the
    disputed points attacked again through the judge: the breaks are the closed form's."""
    rng = np.random.default_rng(1)
    weights, bias = rng.normal(size=(4, 2)), rng.normal(size=2)
    judge = linear_classifier(weights, bias)
    x = rng.uniform(0.3, 0.7, size=(200, 2, 2, 1)).astype("float32")
    logits = x.reshape(200, 4) @ weights + bias
    y = np.argmax(logits, -1).astype("int32")
    margin = np.abs(logits[:, 1] - logits[:, 0])
    epsilon = 0.05  # images in [0.3, 0.7]: every pixel can move the whole epsilon
    breakable = margin < epsilon * np.abs(weights[:, 1] - weights[:, 0]).sum()
    assert 20 < breakable.sum() < 180

    def wrong(images):  # the classes swapped: the search sees every point broken
        return tf.reverse(judge(images), axis=[-1])

    runner = Runner(lambda images: judge(images), x, y, 200, UnitStore(None), ["test"], "linf",
                    0.0, 1.0, search_fn=wrong)
    runner.set_correct(np.ones(200, bool))
    fooled = runner.standalone(attacks.PGD(epsilon=epsilon, num_steps=20, step_size=0.01,
                                           random_start=False))
    np.testing.assert_array_equal(fooled, breakable)


def test_a_query_attack_always_asks_the_model_itself():
    """Square's search compares small changes of the margin, which bfloat16 blurs: under a
    lower-precision search it still queries the judging logits only (the search function
    here fails if it is ever called) and breaks what it breaks without one."""
    rng = np.random.default_rng(2)
    judge = linear_classifier(rng.normal(size=(4, 2)), np.zeros(2))
    x = rng.uniform(0.3, 0.7, size=(64, 2, 2, 1)).astype("float32")
    y = np.argmax(judge(x).numpy(), -1).astype("int32")

    def never(images):
        raise AssertionError("the search logits were used")

    square = attacks.Square(epsilon=0.2, num_queries=100)
    fooled = {}
    for name, search in (("float32", None), ("lower precision", never)):
        runner = Runner(lambda images: judge(images), x, y, 64, UnitStore(None), [name],
                        "linf", 0.0, 1.0, search_fn=search)
        runner.set_correct(np.ones(64, bool))
        fooled[name] = runner.standalone(square)
    np.testing.assert_array_equal(fooled["lower precision"], fooled["float32"])
    assert 0 < fooled["float32"].sum() < 64


def test_a_model_that_computes_in_bfloat16_is_evaluated_as_its_float32_function():
    """A model trained in mixed bfloat16 keeps that policy. Its evaluation attacks and judges
    the float32 function of its weights: on a 2-class linear model, the points broken are
    exactly those the closed form breaks (margin < epsilon * ||w_1 - w_0||_1), and the report
    says what was evaluated."""
    rng = np.random.default_rng(3)
    weights, bias = rng.normal(size=(4, 2)), rng.normal(size=2)
    low = precision.lower_precision_copy(linear_classifier(weights, bias))
    assert precision.computes_in(low) == "mixed_bfloat16"
    x = rng.uniform(0.3, 0.7, size=(200, 2, 2, 1)).astype("float32")
    logits = x.reshape(200, 4).astype(np.float64) @ weights + bias
    y = np.argmax(logits, -1).astype("int32")
    epsilon = 0.05
    breakable = (np.abs(logits[:, 1] - logits[:, 0])
                 < epsilon * np.abs(weights[:, 1] - weights[:, 0]).sum())
    report = tfrobust.evaluate(low, (x, y), epsilon=epsilon, attacks="pgd", sweep_attacks=[],
                               checks=False, verbose=False)
    assert report.model["computes_in"] == "mixed_bfloat16"
    assert report.model["evaluated_as"] == "float32 copy (same weights)"
    assert report.clean_accuracy == 1.0  # the labels are the float32 function's
    np.testing.assert_array_equal(np.array(report.broken_by) != "robust", breakable)
    float32 = tfrobust.evaluate(linear_classifier(weights, bias), (x, y), epsilon=epsilon,
                                attacks="pgd", sweep_attacks=[], checks=False, verbose=False)
    assert "computes_in" not in float32.model and float32.broken_by == report.broken_by
