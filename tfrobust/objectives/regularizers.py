"""ADR regularisers (Bui et al. 2020): compactness, smoothness and the clustering assumption.

Each regulariser maps the features and logits of a clean batch and of its
adversarial counterpart to a per-example value (B,); the objective averages it
with the sample weights and multiplies it by the regulariser's `weight`.
Notation: `z` clean features, `z'` adversarial features, `f` logits, `sg`
stop-gradient, `B` batch size.
"""

import tensorflow as tf

from tfrobust.utils import validation
from tfrobust.utils.registry import Registry

#: s in the label weights of the global terms (the reference's 0.99).
LABEL_WEIGHT_S = 0.99


def feature_distance(clean, adversarial):
    """`d(a, b) = mean_k |sg(a) - b|` between matching rows, (B,); gradient only through b."""
    clean = tf.stop_gradient(tf.cast(clean, tf.float32))
    adversarial = tf.cast(adversarial, tf.float32)
    return tf.reduce_mean(tf.abs(clean - adversarial), axis=-1)


def pairwise_feature_distance(clean, adversarial):
    """`D[i, j] = d(z_j, z'_i)`, (B, B); gradient only through the adversarial side."""
    clean = tf.stop_gradient(tf.cast(clean, tf.float32))
    adversarial = tf.cast(adversarial, tf.float32)
    return tf.reduce_mean(tf.abs(adversarial[:, None, :] - clean[None, :, :]), axis=-1)


def label_weights(labels, num_classes):
    """`w_ij = (s - dist_ij) / s` with `dist_ij = ||onehot_i - onehot_j||_1 / 2`, (B, B).

    Same class: w = 1; different classes: w = 1 - 1/0.99 (a slight push
    apart). The reference divides by the largest distance in the batch, which
    is 2 whenever the batch holds two classes and 0 (a division by zero) when
    it holds one; dividing by 2, the largest distance two one-hot vectors can
    have, gives the reference's weights in the first case and finite ones in
    the second, for any number of classes.
    """
    onehot = tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), num_classes)
    dist = tf.reduce_sum(tf.abs(onehot[:, None, :] - onehot[None, :, :]), axis=-1) / 2.0
    return (LABEL_WEIGHT_S - dist) / LABEL_WEIGHT_S


def soft_cross_entropy(target_logits, logits):
    """`CE(softmax(sg target), logits)` per row, (B,)."""
    target = tf.stop_gradient(tf.nn.softmax(tf.cast(target_logits, tf.float32)))
    return -tf.reduce_sum(target * tf.nn.log_softmax(tf.cast(logits, tf.float32)), axis=-1)


class Regularizer:
    """Base class: a named, weighted per-example term on clean/adversarial pairs."""

    registry_name = None
    #: The key of `tfrobust train --adr-weights` (`lc=1,gc=1,...`) and of the tuning entry
    #: `adr_<short_name>`.
    short_name = None

    def __init__(self, weight=1.0):
        self.weight = validation.check_number("weight", weight, minimum=0.0)

    @property
    def name(self):
        return self.registry_name.replace("-", "_")

    def __call__(self, z, z_adv, logits, logits_adv, labels, num_classes):
        """Per-example values (B,)."""
        raise NotImplementedError

    def get_config(self):
        return {"weight": self.weight}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}(weight={self.weight!r})"


_REGISTRY = Registry("regularizer", Regularizer)
register = _REGISTRY.register


@register("local-compactness")
class LocalCompactness(Regularizer):
    """`L_lc = (1/B) sum_i d(z_i, z'_i)`: each adversarial feature near its clean one."""

    short_name = "lc"

    def __call__(self, z, z_adv, logits, logits_adv, labels, num_classes):
        return feature_distance(z, z_adv)


@register("global-compactness")
class GlobalCompactness(Regularizer):
    """`L_gc = (1/B^2) sum_ij w_ij d(z_j, z'_i)`: adversarial features near their class.

    Per example i: `(1/B) sum_j w_ij d(z_j, z'_i)`, diagonal included. Under
    `tf.distribute` the pairs are formed within each replica's batch.
    """

    short_name = "gc"

    def __call__(self, z, z_adv, logits, logits_adv, labels, num_classes):
        weights = label_weights(labels, num_classes)                    # (B, B)
        return tf.reduce_mean(weights * pairwise_feature_distance(z, z_adv), axis=1)


@register("local-smoothness")
class LocalSmoothness(Regularizer):
    """`L_smooth = (1/B) sum_i CE(softmax(sg f(x_i)), f(x'_i))` (KL with the clean side frozen)."""

    short_name = "ls"

    def __call__(self, z, z_adv, logits, logits_adv, labels, num_classes):
        return soft_cross_entropy(logits, logits_adv)


@register("global-smoothness")
class GlobalSmoothness(Regularizer):
    """The label-weighted B x B average of the smoothness cross-entropy (experimental).

    Per example i: `(1/B) sum_j w_ij CE(softmax(sg f(x_j)), f(x'_i))`. Off
    (weight 0) in the reference configuration.
    """

    short_name = "gs"

    def __init__(self, weight=0.0):
        super().__init__(weight)

    def __call__(self, z, z_adv, logits, logits_adv, labels, num_classes):
        target = tf.stop_gradient(tf.nn.softmax(tf.cast(logits, tf.float32)))   # (B, K)
        log_q = tf.nn.log_softmax(tf.cast(logits_adv, tf.float32))              # (B, K)
        pairwise = -tf.matmul(log_q, target, transpose_b=True)                 # [i, j]
        return tf.reduce_mean(label_weights(labels, num_classes) * pairwise, axis=1)


@register("conditional-entropy")
class ConditionalEntropy(Regularizer):
    """`L_ent = mean_i H(softmax(f(x'_i)))`: the clustering assumption, through both arguments."""

    short_name = "ce"

    def __call__(self, z, z_adv, logits, logits_adv, labels, num_classes):
        log_q = tf.nn.log_softmax(tf.cast(logits_adv, tf.float32))
        return -tf.reduce_sum(tf.exp(log_q) * log_q, axis=-1)


def get(identifier, **kwargs):
    """A regulariser by name (`"local-compactness"`), config dict or instance."""
    return _REGISTRY.get(identifier, **kwargs)


def reference_regularizers():
    """The ADR reference configuration: every term at weight 1, global smoothness at 0."""
    return [LocalCompactness(1.0), GlobalCompactness(1.0), LocalSmoothness(1.0),
            GlobalSmoothness(0.0), ConditionalEntropy(1.0)]


def names():
    return _REGISTRY.names()


def short_names():
    """`{short name: registered name}` of the reference terms, in the reference's order."""
    return {type(r).short_name: type(r).registry_name for r in reference_regularizers()}


def reference_weights():
    """`{short name: weight}` of the reference configuration."""
    return {type(r).short_name: r.weight for r in reference_regularizers()}


def parse_weights(value):
    """`"lc=1,gc=0.5"` (or a dict) to the full weight table, unnamed terms at the reference."""
    weights = reference_weights()
    if value is None:
        return weights
    if isinstance(value, str):
        pairs = [item.split("=", 1) for item in value.split(",") if item.strip()]
        if any(len(pair) != 2 for pair in pairs):
            raise ValueError("Expected adr_weights like 'lc=1,gc=1,ls=1,gs=0,ce=1'. "
                             f"Received: adr_weights={value!r}")
        value = {k.strip(): v.strip() for k, v in pairs}
    if not isinstance(value, dict):
        raise ValueError("Expected adr_weights as 'lc=1,gc=1' or a table of weights. "
                         f"Received: adr_weights={value!r}")
    unknown = sorted(set(value) - set(weights))
    if unknown:
        raise ValueError(f"Expected adr_weights keys among {sorted(weights)}. Received: "
                         f"adr_weights={value!r}")
    for key, weight in value.items():
        try:
            weights[key] = float(weight)
        except (TypeError, ValueError):
            raise ValueError(f"Expected a number for ADR weight {key!r}. Received: "
                             f"adr_weights={value!r}") from None
    return weights


def from_weights(weights):
    """The regularisers of a `{short name: weight}` table, in the reference's order."""
    terms = short_names()
    return [get(terms[key], weight=weight) for key, weight in parse_weights(weights).items()]
