"""The hypersphere embedding head (Pang et al. 2020): normalised cosine logits with margin."""

import keras
import tensorflow as tf

from tfrobust.utils import validation

_KINDS = ("inference", "attack", "train")
_TINY = 1e-12


def _norm(x, axis):
    """`tf.norm(x, axis=axis, keepdims=True)`, with the same values, but squaring with one op:
    `tf.norm` multiplies `x` by itself, so `x / ||x||` read `x` three times, and the tape's
    AddN of three gradients adds them in an order that depends on thread timing on CPU
    (tests/test_determinism.py). Read twice, its gradient is the same from run to run."""
    return tf.sqrt(tf.reduce_sum(tf.square(x), axis=axis, keepdims=True))


@keras.saving.register_keras_serializable(package="tfrobust")
class HypersphereDense(keras.layers.Layer):
    """A normalised cosine dense head with an additive angular margin (HE).

    Pang, Yang, Dong, Xu, Zhu, Su, "Boosting Adversarial Training with
    Hypersphere Embedding", NeurIPS 2020.

    Feature normalisation (FN) and weight normalisation (WN) put features and
    class vectors on the unit sphere, so the logits are cosines; there is no
    bias. The additive margin (AM, the CosFace/LMCL form) and the scale enter
    only where the HE reference uses them:

    ```
    cos_k  = (W_k / ||W_k||) . (z / ||z||)              in [-1, 1]
    train  = s * (cos - m * onehot(y))                  the training loss
    attack = s * cos                                    training attacks, TRADES' KL
    call   = cos                                        inference, export, evaluation
    ```

    `call` returns `cos` (pure inference: no labels, no scale, no margin), so
    exported models and evaluation attacks see the cosines. `RobustModel` asks
    for the other two through `logits_for(features, labels, kind)`; the
    methods `scaled_logits` and `margin_logits` give them directly.

    The class vectors are normalised differentiably (`W / ||W||` inside the
    graph), where the reference PyTorch code renormalises the weight tensor in
    place before each forward pass (a projection). Both give the same logits;
    the gradient here has no component along each `W_k`.

    Args:
        units: number of classes.
        scale: s, the temperature of the training and attack logits (> 0).
        margin: m, the additive margin subtracted from the true class's cosine (>= 0).
        feature_normalization: FN; off gives `W~ . z` (unbounded in `||z||`).
        weight_normalization: WN; off gives `W . z~` (unbounded in `||W_k||`).
        kernel_initializer: initialiser of the class vectors W, shape (features, units).

    Example:

    >>> head = HypersphereDense(10, scale=15.0, margin=0.2)
    >>> model = RobustModel(small_cnn(), head, attack=PGD(epsilon=0.3))  # doctest: +SKIP
    """

    def __init__(self, units, scale=15.0, margin=0.2, feature_normalization=True,
                 weight_normalization=True, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.units = validation.check_number("units", units, minimum=1, integer=True)
        self.scale = validation.check_number("scale", scale, minimum=0.0, strict_minimum=True)
        self.margin = validation.check_number("margin", margin, minimum=0.0)
        self.feature_normalization = bool(feature_normalization)
        self.weight_normalization = bool(weight_normalization)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel", shape=(int(input_shape[-1]), self.units),
            initializer=self.kernel_initializer, trainable=True,
        )

    def cosine(self, features):
        """`cos` (B, units): the normalised features against the normalised class vectors."""
        z = tf.convert_to_tensor(features)
        kernel = tf.cast(self.kernel, z.dtype)
        if self.feature_normalization:
            z = z / tf.maximum(_norm(z, axis=-1), _TINY)                    # (B, D)
        if self.weight_normalization:
            kernel = kernel / tf.maximum(_norm(kernel, axis=0), _TINY)     # (D, K)
        return tf.matmul(z, kernel)

    def call(self, features):
        return self.cosine(features)

    def scaled_logits(self, features):
        """`s * cos`: what training attacks and the TRADES KL see."""
        return self.logits_for(features, None, "attack")

    def margin_logits(self, features, labels):
        """`s * (cos - m * onehot(y))`: what the training loss is computed on."""
        return self.logits_for(features, labels, "train")

    def logits_for(self, features, labels, kind):
        """The logits for one use: `"inference"` (cos), `"attack"` (s cos), `"train"` (margin)."""
        if kind not in _KINDS:
            raise ValueError(f"Expected kind in {_KINDS}. Received: kind={kind!r}")
        cos = self(features)  # (B, K)
        if kind == "inference":
            return cos
        if kind == "attack":
            return self.scale * cos
        if labels is None:
            raise ValueError("The margin logits need labels. Received: labels=None")
        onehot = tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), self.units,
                            dtype=cos.dtype)
        return self.scale * (cos - self.margin * onehot)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            scale=self.scale,
            margin=self.margin,
            feature_normalization=self.feature_normalization,
            weight_normalization=self.weight_normalization,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config
