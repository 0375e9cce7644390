"""Attack losses: per-example objectives an attack maximises.

Each loss maps `(logits, labels)` to a `(B,)` vector, computed in float32
whatever the model's compute dtype. They are looked up by name with `get`,
the way `keras.losses.get` works. `labels` are the true classes for
untargeted attacks and the target classes for targeted ones: a targeted
attack maximises the *negative* of the loss on the target (see `Attack`),
except `dlr-targeted`, which is written to be maximised directly.
"""

import tensorflow as tf

_TINY = 1e-12


def cross_entropy(logits, labels, clean_logits=None, target=None):
    """Sparse softmax cross-entropy in float32, (B,): the one used by attacks and objectives."""
    del clean_logits, target
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=labels, logits=tf.cast(logits, tf.float32))


def _true_and_best_other(logits, labels):
    num_classes = tf.shape(logits)[-1]
    onehot = tf.one_hot(labels, num_classes, dtype=logits.dtype)
    true = tf.reduce_sum(onehot * logits, axis=-1)
    # Push the true class far below every other before taking the max.
    other = tf.reduce_max(logits - onehot * 1e9, axis=-1)
    return true, other


def cw_margin(logits, labels, clean_logits=None, target=None):
    """Carlini-Wagner margin `max_{i != y} z_i - z_y`, (B,); > 0 means misclassified."""
    del clean_logits, target
    true, other = _true_and_best_other(logits, labels)
    return other - true


def dlr(logits, labels, clean_logits=None, target=None):
    """Difference of logits ratio (Croce & Hein 2020), (B,).

    ```
    DLR(z, y) = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)
    ```
    where pi sorts the logits in decreasing order. Invariant to shifting and
    (positive) scaling of the logits, so it does not saturate the way
    cross-entropy does on scaled or normalised logits.
    """
    del clean_logits, target
    true, other = _true_and_best_other(logits, labels)
    top3 = tf.math.top_k(logits, k=3).values
    return -(true - other) / (top3[:, 0] - top3[:, 2] + _TINY)


def dlr_targeted(logits, labels, clean_logits=None, target=None):
    """Targeted DLR (Croce & Hein 2020), (B,), to be maximised.

    ```
    DLR_t(z, y, t) = -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)
    ```
    Needs `target` (B,) int.
    """
    del clean_logits
    if target is None:
        raise ValueError("The 'dlr-targeted' loss needs target classes. Received: target=None")
    num_classes = tf.shape(logits)[-1]
    z_y = tf.reduce_sum(tf.one_hot(labels, num_classes, dtype=logits.dtype) * logits, -1)
    z_t = tf.reduce_sum(tf.one_hot(target, num_classes, dtype=logits.dtype) * logits, -1)
    top4 = tf.math.top_k(logits, k=4).values
    return -(z_y - z_t) / (top4[:, 0] - 0.5 * (top4[:, 2] + top4[:, 3]) + _TINY)


def kl_to_clean(logits, labels, clean_logits=None, target=None):
    """KL(p(x) || p(x')) from the clean prediction to the adversarial one, (B,).

    The TRADES inner maximisation. Needs `clean_logits`; labels are unused.
    """
    del labels, target
    if clean_logits is None:
        raise ValueError("The 'kl' loss needs the clean logits. Received: clean_logits=None")
    # The same KL as `tfrobust.objectives.base.kl_divergence` (TRADES' loss), written with
    # softmax(p) where the loss has exp(log_softmax(p)): one ulp apart, which TRADES' sign
    # steps and Adam's first update amplify beyond 1e-6 in three steps (pin_behaviour.py),
    # so each keeps its form.
    p_clean = tf.nn.softmax(clean_logits)
    return tf.reduce_sum(
        p_clean * (tf.nn.log_softmax(clean_logits) - tf.nn.log_softmax(logits)), axis=-1
    )


LOSSES = {
    "ce": cross_entropy,
    "cw": cw_margin,
    "dlr": dlr,
    "dlr-targeted": dlr_targeted,
    "kl": kl_to_clean,
}


def get(identifier):
    """Return the attack loss function named `identifier` (or a callable as is)."""
    if callable(identifier):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in LOSSES:
        return LOSSES[identifier.lower()]
    raise ValueError(
        f"Expected loss to be one of {sorted(LOSSES)} or a callable. Received: loss={identifier!r}"
    )
