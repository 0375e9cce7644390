"""Norm-ball geometry shared by every attack: random starts, steps, projections.

All functions work on float32 batches of shape (B, ...) and treat each example
separately. Norms are "linf" and "l2".
"""

import tensorflow as tf

NORMS = ("linf", "l2")
_TINY = 1e-12


def _per_example_l2(v):
    """L2 norm of each example, shaped to broadcast against `v`: (B, 1, ..., 1)."""
    axes = list(range(1, v.shape.rank))
    return tf.sqrt(tf.reduce_sum(tf.square(v), axis=axes, keepdims=True))


def clip_to_range(x, clip_min, clip_max):
    """Keep pixels inside the valid data range."""
    return tf.clip_by_value(x, clip_min, clip_max)


def project(x_adv, x, epsilon, norm):
    """Project `x_adv` onto the `norm` ball of radius `epsilon` around `x`."""
    delta = x_adv - x
    if norm == "linf":
        delta = tf.clip_by_value(delta, -epsilon, epsilon)
    else:
        factor = tf.minimum(1.0, epsilon / tf.maximum(_per_example_l2(delta), _TINY))
        delta = delta * factor
    return x + delta


def steepest_ascent_step(grad, step_size, norm):
    """The step of length `step_size` (in `norm`) that most increases a linear loss."""
    if norm == "linf":
        return step_size * tf.sign(grad)
    return step_size * grad / tf.maximum(_per_example_l2(grad), _TINY)


def random_start(x, epsilon, norm, seed):
    """A point drawn uniformly from the `norm` ball of radius `epsilon` around `x`.

    L-inf: uniform in the cube. L2: uniform in the ball (a Gaussian direction
    with radius epsilon * u^(1/d)), so starts are not concentrated on the
    sphere as Gaussian noise alone would be in high dimension.

    Args:
        seed: a shape-(2,) int32 tensor for stateless random ops.
    """
    if norm == "linf":
        return x + tf.random.stateless_uniform(tf.shape(x), seed, -epsilon, epsilon, x.dtype)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    direction = tf.random.stateless_normal(tf.shape(x), seeds[0], dtype=x.dtype)
    direction = direction / tf.maximum(_per_example_l2(direction), _TINY)
    dims = tf.cast(tf.reduce_prod(tf.shape(x)[1:]), x.dtype)
    radius_shape = tf.concat([tf.shape(x)[:1], tf.ones([x.shape.rank - 1], tf.int32)], 0)
    u = tf.random.stateless_uniform(radius_shape, seeds[1], dtype=x.dtype)
    return x + epsilon * tf.pow(u, 1.0 / dims) * direction


def norm_of(delta, norm):
    """Per-example norm of a perturbation, shape (B,)."""
    flat = tf.reshape(delta, [tf.shape(delta)[0], -1])
    if norm == "linf":
        return tf.reduce_max(tf.abs(flat), axis=1)
    return tf.norm(flat, axis=1)
