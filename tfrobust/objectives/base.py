"""The training-framework base class and the pieces every framework shares."""

import dataclasses

import tensorflow as tf

from tfrobust.attacks import losses
from tfrobust.utils.registry import Registry


@dataclasses.dataclass(frozen=True)
class Hyperparameter:
    """One constructor argument of an objective, as `tfrobust train` and tuning offer it.

    Attributes:
        name: the constructor argument, also the `tfrobust train` option (`--step-ratio`
            for `step_ratio`) and its `config.json` key.
        default: the reference value.
        kind: `"float"` or `"int"`.
        help: what it does, for `--help` and the tuning summary.
        search: the default tuning range `(min, max)`.
        sampling: `"linear"` or `"log"` tuning.
        minimum: the smallest sensible value; `strict` excludes it.
        tuning_name: its keras-tuner name, when the plain name would be ambiguous
            (TRADES' and ALP's `beta` are `trades_beta` and `alp_beta`).
    """

    name: str
    default: float
    kind: str = "float"
    help: str = ""
    search: tuple = None
    sampling: str = "linear"
    minimum: float = 0.0
    strict: bool = False
    tuning_name: str = None

    @property
    def key(self):
        """The keras-tuner name."""
        return self.tuning_name or self.name


@dataclasses.dataclass
class LossOutput:
    """What an objective computes on one batch.

    Attributes:
        loss: the scalar to minimise (mean over the batch of weighted per-example losses).
        terms: named scalar loss terms to log (unweighted means over the batch).
        clean_logits: inference logits on the clean batch (for clean accuracy), or None
            (then `RobustModel` computes them, if it logs clean accuracy).
        adv_logits: inference logits on the adversarial batch, or None.
    """

    loss: tf.Tensor
    terms: dict
    clean_logits: tf.Tensor = None
    adv_logits: tf.Tensor = None


def weighted_mean(per_example, sample_weight=None):
    """Keras' "sum over batch size" reduction: `sum(w_i * l_i) / B`."""
    per_example = tf.cast(per_example, tf.float32)
    if sample_weight is not None:
        per_example = per_example * tf.cast(tf.reshape(sample_weight, [-1]), tf.float32)
    return tf.reduce_mean(per_example)


def sparse_ce(logits, y):
    """Per-example sparse softmax cross-entropy in float32, (B,)
    (`attacks.losses.cross_entropy`)."""
    return losses.cross_entropy(logits, y)


def derived_pgd(attack, **overrides):
    """A PGD attack with the budget of `attack` and some settings changed.

    Frameworks with their own inner maximisation (TRADES' KL, FastAT's single
    step) keep the user's threat model (epsilon, norm, range, steps, seed) and
    replace only what the framework defines.
    """
    from tfrobust.attacks import PGD

    config = {k: v for k, v in attack.get_config().items()
              if k in ("epsilon", "norm", "clip_min", "clip_max", "seed", "num_steps",
                       "step_size")}
    config.update(overrides)
    return PGD(**config)


def kl_divergence(p_logits, q_logits):
    """Per-example KL(softmax(p) || softmax(q)) in float32, (B,).

    TRADES' loss term; its attack's `attacks.losses.kl_to_clean` computes the same
    quantity one ulp differently (see there).
    """
    p_logits = tf.cast(p_logits, tf.float32)
    q_logits = tf.cast(q_logits, tf.float32)
    log_p = tf.nn.log_softmax(p_logits)
    return tf.reduce_sum(tf.exp(log_p) * (log_p - tf.nn.log_softmax(q_logits)), axis=-1)


def paired_logits(model, z, z_adv, use, y):
    """The head's `use` logits of the clean rows `z` and the adversarial rows `z_adv`, in
    one call of the head on both: (logits of z, logits of z_adv).

    Why one call: the gradient of a weight that several calls use is the sum of theirs,
    which the tape adds with one AddN, and on CPU AddN starts from whichever input's
    buffer it can reuse, which depends on how TensorFlow's threads ran. Two terms add up
    the same either way; three or more do not, so an objective that called the head three
    times (TRADES, ALP, ADR did) updated its weights differently in the last bits from one
    run to the next, and a resumed run did not end where an uninterrupted one did.
    """
    both = model.use_logits(tf.concat([z, z_adv], 0), use, tf.concat([y, y], 0))
    return tf.split(both, 2)


def copies(tensor, count):
    """`count` copies of `tensor` whose gradients are added in a fixed order.

    For a tensor that three or more terms read (see `paired_logits`): the copies'
    gradients are added by one reduction over a stacked axis, not by the tape's AddN.
    """
    shape = tf.concat([[count], tf.shape(tensor)], 0)
    return tf.unstack(tf.broadcast_to(tensor[None], shape), num=count)


class ModelView:
    """What an objective may use of the `RobustModel` it trains, and nothing else.

    `RobustModel` owns the step (the gradient tape, the optimizer update, the loss
    scaling under `tf.distribute`, the metrics); an objective crafts its
    adversarial examples and computes its loss through this view. A
    `RobustModel` offers the same members, so an objective's methods also take
    the model itself (as tests do).
    """

    __slots__ = ("_model",)

    def __init__(self, model):
        self._model = model

    @property
    def attack(self):
        """The training attack: the threat model (epsilon, norm, range, steps)."""
        return self._model.attack

    @property
    def backbone(self):
        """The backbone, for objectives that read an intermediate layer (ADR)."""
        return self._model.backbone

    @property
    def distribute_strategy(self):
        """The strategy under which state carried across steps is created (FreeAT)."""
        return self._model.distribute_strategy

    def features(self, x, training=True):
        """The backbone's feature vector, in training mode unless told otherwise."""
        return self._model.features(x, training=training)

    def use_logits(self, features, use, labels=None):
        """The head's logits on `features` for one use of `RobustModel.LOGIT_USES`.

        An objective's uses: `"loss"` (its cross-entropies), `"regularizer"` (the
        terms that compare two predictions: TRADES' KL, ALP's pairing, ADR's
        regularisers) and `"evaluation"` (the logged accuracies).
        """
        return self._model.use_logits(features, use, labels)

    def attack_logits_fn(self):
        """Images to the logits the training attack maximises its loss through."""
        return self._model.logits_fn("training_attack")


class Objective:
    """A training framework: how a batch becomes adversarial examples and a loss.

    Subclasses implement `compute_loss` and, if their examples are not the
    model's attack's, `craft`. `RobustModel.train_step` crafts outside the
    gradient tape, records `compute_loss` under it and applies one optimizer
    update through `update`; frameworks with another update pattern override
    `update` (FreeAT replays each batch, one update per replay).
    """

    registry_name = None
    #: Names of the loss terms this objective logs, besides "loss".
    term_names = ()
    #: Whether the objective needs a training attack.
    needs_attack = True

    # -- the recipe: what `tfrobust train` and tuning need to know (tfrobust.recipe) --------
    #: Whether `tfrobust train --method` offers it (ADR is added to a method with `--adr`).
    selectable = True
    #: The HE reference's `(scale, margin)` for this framework with a hypersphere head
    #: (SPEC section 2); frameworks the reference has no row for take PGD-AT's.
    he_defaults = (15.0, 0.2)
    #: The constructor arguments offered as options and tuning entries (`Hyperparameter`).
    hyperparameters = ()
    #: Whether the training attack is the model's PGD with its `num_steps` (so 0 steps
    #: would train on the random start); FreeAT and FastAT derive their own step.
    uses_attack_steps = True
    #: Optimizer updates per training batch (FreeAT: one per replay); learning-rate
    #: schedules count updates.
    updates_per_batch = 1
    #: Whether `compute_loss` returns the clean logits (from the clean forward pass its loss
    #: needs); if not, `RobustModel` computes them outside the tape for the `accuracy` log.
    computes_clean_logits = True

    @classmethod
    def from_options(cls, options):
        """An instance from resolved run options (each hyperparameter by its name)."""
        return cls(**{h.name: options[h.name] for h in cls.hyperparameters})

    def callbacks(self):
        """Keras callbacks that training with this objective needs (FastAT's guard)."""
        return []

    def build(self, model, batch_size):
        """Create state carried across steps; called by `RobustModel.fit` before training.

        Returns True when it created new state (so a traced train function
        must be traced again).
        """
        return False

    def state_variables(self):
        """Variables carried from step to step, which a backup must keep to resume exactly.

        Empty for most frameworks; `tfrobust.backup.BackupAndRestore` saves them.
        """
        return []

    def craft(self, model, x, y, seed):
        """Adversarial examples for the training loss (no gradient to the weights).

        `model` is a `ModelView` (or the `RobustModel`).
        """
        return tf.stop_gradient(model.attack.perturb(model.attack_logits_fn(), x, y, seed))

    def compute_loss(self, model, x, x_adv, y, sample_weight=None):
        """Return a `LossOutput` for one batch; called under the weight tape."""
        raise NotImplementedError

    def update(self, model, x, x_adv, y, sample_weight, minimize):
        """The batch's optimizer update(s); returns the `LossOutput` to log.

        `minimize(loss_fn, watch=())` records `loss_fn()` (a `LossOutput`) on
        `RobustModel`'s tape, applies one optimizer update and returns the
        output and the gradients of the tensors in `watch`. One update of
        `compute_loss` by default.
        """
        out, _ = minimize(lambda: self.compute_loss(model, x, x_adv, y, sample_weight))
        return out

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


_REGISTRY = Registry("objective", Objective)
register = _REGISTRY.register


def get(identifier, **kwargs):
    """Look up an objective by name (`"pgd-at"`), config dict or instance."""
    return _REGISTRY.get(identifier, **kwargs)


def names():
    """The registered objective names."""
    return _REGISTRY.names()


def get_class(name):
    """The class registered under `name`."""
    return _REGISTRY.get_class(name)
