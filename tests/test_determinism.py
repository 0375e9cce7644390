"""An update is the same from run to run: no weight's gradient sums three or more terms.

The tape adds the gradients of a tensor that several ops read with one AddN, and on CPU
AddN starts from whichever input's buffer it can reuse, which depends on how TensorFlow's
threads ran: two terms add up the same in either order, three or more do not. ADR on
small_cnn (dropout 0.5, 512 digits, one epoch, the default thread pools) ended with 5
different sets of weights in 8 identical runs while it called the head three times; with
the head called once per kind of logits, 8 of 8 were equal (2026-12-05, AMD EPYC). The
test reads every AddN of each objective's gradient graph.
"""

import keras
import pytest
import tensorflow as tf

from tfrobust import attacks, objectives
from tfrobust.layers import HypersphereDense
from tfrobust.models import RobustModel
from tfrobust.objectives import regularizers as R

ALL_FIVE = [R.LocalCompactness(1.0), R.GlobalCompactness(1.0), R.LocalSmoothness(1.0),
            R.GlobalSmoothness(1.0), R.ConditionalEntropy(1.0)]
CASES = {
    "pgd-at": lambda: objectives.get("pgd-at"),
    "trades": lambda: objectives.get("trades"),
    "alp": lambda: objectives.get("alp"),
    "fast-at": lambda: objectives.get("fast-at"),
    "free-at": lambda: objectives.get("free-at"),
    "standard": lambda: objectives.get("standard"),
    "adr-reference": lambda: objectives.ADR(layer="hidden"),
    "adr-all-five-terms": lambda: objectives.ADR(regularizers=ALL_FIVE, layer="hidden"),
    "adr-trades-base": lambda: objectives.ADR("trades", layer="hidden"),
    "adr-at-the-output": lambda: objectives.ADR(regularizers=ALL_FIVE, layer="out"),
    "adr-no-layer": lambda: objectives.ADR(regularizers=ALL_FIVE),
}


def sums_of_three_or_more(objective, head):
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                                 keras.layers.Dense(6, activation="relu", name="hidden"),
                                 keras.layers.Dense(5, name="out")])
    model = RobustModel(backbone, head, objective=objective,
                        attack=attacks.PGD(epsilon=0.1, num_steps=1))
    model.compile(optimizer="sgd")
    x = tf.random.stateless_uniform((4, 4, 4, 1), seed=[1, 2])
    x_adv, y = x + 0.01, tf.constant([0, 1, 2, 0])
    model(x)

    # `objective` itself, not `model.objective`: RobustModel gives an ADR without a layer
    # the backbone's reference latent (here its output), and the test keeps that case too.
    @tf.function
    def gradients(x, x_adv, y):
        with tf.GradientTape() as tape:
            out = objective.compute_loss(model._view, x, x_adv, y)
        return tape.gradient(out.loss, model.trainable_variables)

    graph = gradients.get_concrete_function(x, x_adv, y).graph
    assert all(g is not None for g in gradients(x, x_adv, y))
    return sorted(op.name for op in graph.get_operations()
                  if op.type == "AddN" and len(op.inputs) > 2)


@pytest.mark.parametrize("head", ["dense", "hypersphere"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_no_gradient_is_a_sum_of_three_terms(name, head):
    if head == "dense":
        layer = keras.layers.Dense(3)
    else:
        layer = HypersphereDense(3, scale=15.0, margin=0.2)
    assert sums_of_three_or_more(CASES[name](), layer) == []
