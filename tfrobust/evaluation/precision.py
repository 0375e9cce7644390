"""Gradient attacks that compute in bfloat16 while every break is judged by the model.

`tfrobust.evaluate(..., precision="mixed_bfloat16")` gives the gradient attacks
a copy of the model whose layers compute in bfloat16 (variables stay float32,
Keras' `mixed_bfloat16` policy): their gradients and early exits use the copy.
Each adversarial example they return is then judged by the model in its own
precision, so a point counts as broken only if it fools the real model: the
option can make the attacks weaker (a search in 8-bit mantissas), never count a
break that is not there. Gradient-free attacks (Square) always query the model
itself: their search compares small changes of the margin, which bfloat16
logits blur (measured on the PGD-AT `small_cnn`: Square-5000 in bfloat16 broke
none of two points in 4 seeds each, which it broke in 3 of 4 seeds each in
float32). On this project's CPU, with AMX, a pass of the copy of `small_cnn` cost
about a quarter (gradient) and a fifth (forward) of the float32 pass
(benchmarks/README.md); without AMX it may be slower (mixed bfloat16 training was,
on an AMD EPYC without AMX).
"""

import keras
import numpy as np

from tfrobust.utils import validation


def check_precision(precision):
    """`precision` if it is one of training's precisions, else a ValueError naming it."""
    from tfrobust.recipe import PRECISIONS  # here: recipe's imports reach the evaluation

    return validation.check_choice("precision", precision, PRECISIONS)


def lower_precision_copy(model, policy="mixed_bfloat16"):
    """A copy of the Keras `model` whose layers compute under `policy`, same weights.

    Rebuilt from `model.get_config()` with every layer's dtype policy replaced
    (the input layers' dtypes are kept), so it works for any model Keras can
    rebuild from its config: Functional, Sequential and `RobustModel`.

    Raises:
        ValueError: `model` is not a Keras model, or cannot be rebuilt from its config.
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"Expected a Keras model for precision={policy!r}: the attacks "
                         "compute with a copy of it in that precision. Received: model of type "
                         f"{type(model).__name__}")
    try:
        copy = model.__class__.from_config(_with_policy(model.get_config(), policy))
        if not copy.built:
            copy(np.zeros((1,) + tuple(model.input_shape[1:]), np.float32))
        copy.set_weights(model.get_weights())
    except (NotImplementedError, TypeError, ValueError) as error:
        raise ValueError(f"Expected a model Keras can rebuild from its config for "
                         f"precision={policy!r}. Received: model {model.name!r}, which "
                         f"could not be: {error}") from None
    if policy != "float32" and not any(layer.compute_dtype == "bfloat16"
                                       for layer in _layers(copy)):
        raise ValueError(f"Expected the layers of model {model.name!r} to take the policy "
                         f"{policy!r}. Received: a model none of whose layers declares a dtype "
                         "policy in its config")
    return copy


def computes_in(model):
    """The lower precision some layer of the Keras `model` computes in, or "float32".

    A model trained with `precision="mixed_bfloat16"` keeps that policy in its layers (and
    in its `.keras` file): it computes in bfloat16 when loaded.
    """
    lower = {layer.compute_dtype for layer in _layers(model)} - {"float32", None}
    return f"mixed_{sorted(lower)[0]}" if lower else "float32"


def _with_policy(config, policy):
    """`config` with every layer's `DTypePolicy` replaced by `policy`."""
    if isinstance(config, dict):
        return {key: (policy if key == "dtype" and _is_policy(value) else
                      _with_policy(value, policy))
                for key, value in config.items()}
    if isinstance(config, list):
        return [_with_policy(value, policy) for value in config]
    return config


def _is_policy(value):
    return isinstance(value, dict) and value.get("class_name") == "DTypePolicy"


def _layers(model):
    """Every layer of `model`, nested models' included."""
    for layer in getattr(model, "layers", ()):
        yield layer
        yield from _layers(layer)
