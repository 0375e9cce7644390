"""ADR (Bui et al. 2020): adversarial training with compactness and smoothness regularisers."""

import keras
import tensorflow as tf

from tfrobust.objectives import regularizers as regularizers_lib
from tfrobust.objectives.base import (LossOutput, Objective, copies, kl_divergence, paired_logits,
                                      register, sparse_ce, weighted_mean)
from tfrobust.objectives.trades import TRADES
from tfrobust.utils import validation

BASES = ("pgd-at", "trades")


@register("adr")
class ADR(Objective):
    """Adversary divergence reduction: local/global compactness, smoothness, clustering.

    Bui, Le, Zhao, Montague, deVel, Abraham, Phung, "Improving Adversarial
    Robustness by Enforcing Local and Global Compactness", ECCV 2020.

    Clean and adversarial batches pass through the network separately, as in
    the reference code; the regularisers read the activations of `layer` and
    the logits. Which layer matters: the reference reads an intermediate
    latent (on the TRADES SmallCNN the 1,024 flattened convolutional
    features, not the 200-unit vector the head reads); on `small_cnn`
    without dropout, ADR applied to the 200-unit vector did not train
    (SPEC section 3, experiments/README.md). `RobustModel` resolves
    `layer=None` to the backbone's declared reference latent
    (`tfrobust.models.reference_latent`: `"flatten"` on `small_cnn`,
    `"features"` on the ResNets) and saves the resolved name, so a saved
    model says which tensor ADR read:

    ```
    base "pgd-at": loss_i = 0.5 CE(f(x_i), y_i) + 0.5 CE(f(x'_i), y_i) + sum_r w_r R_r(i)
    base "trades": loss_i = CE(f(x_i), y_i) + beta KL(p(x_i) || p(x'_i)) + sum_r w_r R_r(i)
    ```
    `x'` comes from the model's `attack` (PGD on cross-entropy from a uniform
    start, the reference's attack) for "pgd-at", and from TRADES' KL attack for
    "trades". The cross-entropies use the head's training logits (with margin
    for a hypersphere head); the regularisers and the KL its attack logits.
    Each regulariser is logged under its own name.

    Differences from the reference code (ADR's TensorFlow code for CIFAR-10, its
    PyTorch port, whose MNIST configuration names `small_cnn`'s latent): the
    base "pgd-at" weights are the TensorFlow code's 0.5 and 0.5, where the
    PyTorch port's MNIST configuration has 1 and 1 (the same update as every
    term at 0.5 under twice the learning rate); global smoothness is at 0 by
    default, as the TensorFlow code's comment advises and ASCL sets it, where
    both codes' run scripts set it to 1; weight decay belongs to the optimizer
    (the TensorFlow code adds 2e-4 L2 to its loss). Compactness passes its
    gradient through the adversarial side only, as in every reference: on a
    latent whose scale the weights set (`small_cnn`'s `flatten`), that can
    grow the scale without bound (experiments/README.md, "Why ADR's latent
    explodes on MNIST"); the ResNets' latents follow a BatchNorm, as the
    TensorFlow code's does.

    Args:
        base: `"pgd-at"` or `"trades"`.
        regularizers: a list of `tfrobust.objectives.regularizers` objects,
            names or configs; `None` is the reference configuration (every term
            at weight 1, global smoothness at 0).
        layer: the name of the backbone layer whose output (flattened) the
            regularisers read. `None`: `RobustModel` sets it to the backbone's
            reference latent; an ADR objective used on its own, or loaded
            from a file saved before layers were resolved, reads the
            backbone's output (the feature vector the head reads).
        beta: the TRADES KL weight (base "trades" only).
        init_std: the TRADES attack's Gaussian start (base "trades" only).
    """

    selectable = False  # added to a base method: `tfrobust train --method trades --adr`

    def __init__(self, base="pgd-at", regularizers=None, layer=None, beta=6.0, init_std=0.001):
        self.base = validation.check_choice("base", base, BASES)
        if regularizers is None:
            regularizers = regularizers_lib.reference_regularizers()
        self.regularizers = [regularizers_lib.get(r) for r in regularizers]
        names = [r.name for r in self.regularizers]
        if len(set(names)) != len(names):
            raise ValueError(f"Expected each regularizer once. Received: {names}")
        self.layer = layer
        self.beta = validation.check_number("beta", beta, minimum=0.0)
        self.init_std = validation.check_number("init_std", init_std, minimum=0.0)
        base_terms = ("clean_loss", "adv_loss") if self.base == "pgd-at" else (
            "natural_loss", "robust_loss")
        self.term_names = base_terms + tuple(names)
        self._tap = None
        self._tap_is_output = False  # the tapped layer is the backbone's output

    @classmethod
    def from_options(cls, options):
        """ADR on the run's `method` with its `adr_weights` and `adr_layer` (and TRADES' beta)."""
        base = options["method"]
        if base not in BASES:
            raise ValueError(f"Expected --adr with method {' or '.join(BASES)}. Received: "
                             f"method={base!r}")
        return cls(base, regularizers_lib.from_weights(options["adr_weights"]),
                   layer=options["adr_layer"],
                   beta=options["beta"] if base == "trades" else 6.0)

    def with_layer(self, layer):
        """A copy of this objective that regularises the backbone layer `layer`."""
        return type(self).from_config({**self.get_config(), "layer": layer})

    def build(self, model, batch_size):
        if self.layer is None or self._tap is not None:
            return False
        try:
            target = model.backbone.get_layer(self.layer)
        except ValueError:
            names = [layer.name for layer in model.backbone.layers]
            raise ValueError(f"Expected layer to name a layer of the backbone ({names}). "
                             f"Received: layer={self.layer!r}") from None
        # Shares the backbone's layers and weights: one pass gives both outputs.
        backbone = model.backbone
        if isinstance(backbone, keras.Sequential):
            inputs = keras.Input(backbone.input_shape[1:])
            outputs = inputs
            for member in backbone.layers:
                outputs = member(outputs)
                if member is target:
                    tapped = outputs
            self._tap = keras.Model(inputs, [tapped, outputs])
            self._tap_is_output = tapped is outputs
        else:
            self._tap = keras.Model(backbone.inputs, [target.output, backbone.outputs[0]])
            self._tap_is_output = target.output is backbone.outputs[0]
        return True

    def _forward(self, model, x):
        """(the regularised activations, flattened; the features the head reads)."""
        if self.layer is None:
            h = z = model.features(x, training=True)
        else:
            if self._tap is None:
                # RobustModel.fit builds it; a direct call (a test, a custom loop) builds it.
                self.build(model, None)
            h, z = self._tap(x, training=True)
        if self.layer is None or self._tap_is_output:
            # One tensor read by the regularisers and by both head calls: two copies, so
            # that its gradient is not a sum of three terms (see `compute_loss`).
            h, z = copies(z, 2)
        return tf.reshape(h, [tf.shape(h)[0], -1]), z

    def craft(self, model, x, y, seed):
        if self.base == "trades":
            return TRADES(self.beta, self.init_std).craft(model, x, y, seed)
        return super().craft(model, x, y, seed)

    def compute_loss(self, model, x, x_adv, y, sample_weight=None):
        h, z = self._forward(model, x)
        h_adv, z_adv = self._forward(model, x_adv)
        # The head is called once per kind of logits (TRADES' base uses the clean rows' loss
        # logits only) and the regularisers read copies, so that no gradient is a sum of
        # three or more terms in an order threads decide (`paired_logits`): the update is
        # the same from run to run.
        logits, logits_adv = paired_logits(model, z, z_adv, "regularizer", y)
        if self.base == "pgd-at":
            clean_logits, adv_logits = paired_logits(model, z, z_adv, "loss", y)
            clean_ce, second = sparse_ce(clean_logits, y), sparse_ce(adv_logits, y)
            per_example = 0.5 * clean_ce + 0.5 * second
            terms = {"clean_loss": tf.reduce_mean(clean_ce), "adv_loss": tf.reduce_mean(second)}
        else:
            clean_ce = sparse_ce(paired_logits(model, z, z_adv, "loss", y)[0], y)
            second = kl_divergence(logits, logits_adv)
            per_example = clean_ce + self.beta * second
            terms = {"natural_loss": tf.reduce_mean(clean_ce),
                     "robust_loss": tf.reduce_mean(second)}
        num_classes = logits.shape[-1]
        count = len(self.regularizers)
        inputs = zip(*(copies(t, count) for t in (h, h_adv, logits, logits_adv))) if count > 1 \
            else [(h, h_adv, logits, logits_adv)] * count
        for regularizer, (h_r, h_adv_r, logits_r, logits_adv_r) in zip(self.regularizers, inputs):
            value = regularizer(h_r, h_adv_r, logits_r, logits_adv_r, y, num_classes)   # (B,)
            per_example = per_example + regularizer.weight * value
            terms[regularizer.name] = tf.reduce_mean(value)
        return LossOutput(weighted_mean(per_example, sample_weight), terms,
                          tf.stop_gradient(model.use_logits(z, "evaluation")),
                          tf.stop_gradient(model.use_logits(z_adv, "evaluation")))

    def get_config(self):
        return {"base": self.base, "layer": self.layer, "beta": self.beta,
                "init_std": self.init_std,
                "regularizers": [keras.saving.serialize_keras_object(r)
                                 for r in self.regularizers]}
