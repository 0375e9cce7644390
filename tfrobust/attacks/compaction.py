"""Shrinking a batch as its examples are fooled (`Attack.stop_when_fooled`).

An attack that stops on fooled examples keeps its per-example state for the
examples still attacked (`gather`), writes each finished example's result back
into whole-batch outputs at its original position (`scatter`), and tells
`tf.while_loop` that the batch dimension of its state may change (`free_batch`).
"""

import tensorflow as tf


def gather(structure, keep):
    """Every per-example tensor of `structure` (any nest), at the batch positions `keep`."""
    return tf.nest.map_structure(lambda t: tf.gather(t, keep), structure)


def scatter(outputs, index, values):
    """`outputs` (whole-batch tensors) with `values` written at batch positions `index`."""
    index = index[:, None]
    return tuple(tf.tensor_scatter_nd_update(out, index, tf.cast(value, out.dtype))
                 for out, value in zip(outputs, values))


def free_batch(tensor):
    """`tensor`'s shape with its batch dimension left free (a `tf.while_loop` invariant)."""
    return tf.TensorShape([None, *tensor.shape[1:]])
