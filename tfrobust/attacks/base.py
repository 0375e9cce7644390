"""The attack base class: configuration plus one method `(model, x, y) -> x_adv`."""

import copy

import keras
import numpy as np
import tensorflow as tf

from tfrobust.attacks import projections
from tfrobust.utils import validation
from tfrobust.utils.device import resolve_jit_compile
from tfrobust.utils.registry import Registry


def as_logits_fn(model):
    """A function from images to float32 logits, calling Keras models in inference mode.

    `model` may be a `RobustModel` (its `logits_fn("evaluation")`, the
    logits its `LOGIT_USES` gives evaluation attacks), another Keras
    model/layer (called with `training=False`) or any callable (used as is:
    `RobustModel` passes its training attacks the function whose logits they
    should see, `s * cos` for a hypersphere head).
    """
    if isinstance(model, keras.Layer) and callable(getattr(model, "logits_fn", None)):
        return model.logits_fn("evaluation")
    if isinstance(model, keras.Layer):
        def logits_fn(x):
            return tf.cast(model(x, training=False), tf.float32)
    elif callable(model):
        def logits_fn(x):
            return tf.cast(model(x), tf.float32)
    else:
        raise TypeError(
            "Expected model to be a Keras model or a callable returning logits. "
            f"Received: model of type {type(model).__name__}"
        )
    return logits_fn


class Attack:
    """Base class of every attack: a configuration and `(model, x, y) -> x_adv`.

    Subclasses implement `perturb(model, x, y, seed)` with TensorFlow ops only
    (loops as `tf.while_loop`), so the same code runs eagerly, inside a Keras
    `train_step`, under `tf.distribute` and under XLA. Calling the attack
    object eagerly runs `perturb` in a cached `tf.function`.

    Args:
        epsilon: radius of the threat model, in pixel units of [clip_min, clip_max].
        norm: `"linf"` or `"l2"`.
        clip_min, clip_max: the valid pixel range.
        targeted: if True, `y` holds target classes and the attack moves towards them.
        seed: int seed for the random parts; calls made with the same seed and
            in the same order give the same results.
        jit_compile: compile eager calls with XLA; `"auto"` picks the measured
            faster choice for the device (off on CPU).
    """

    registry_name = None
    # What code that uses attacks may ask of one, instead of testing its class:
    # `gradient_free`: the attack only queries the model's outputs, never its
    # gradients (the evaluation's black_box check compares such attacks with the
    # white-box ones); `cost_in_name`: its display name shows `cost`
    # (`pgd-20`, `square-5000`; AutoAttack's members keep their plain names).
    gradient_free = False
    cost_in_name = False

    def __init__(self, epsilon, *, norm="linf", clip_min=0.0, clip_max=1.0, targeted=False,
                 seed=0, jit_compile="auto"):
        self.epsilon = validation.check_number("epsilon", epsilon, minimum=0.0)
        self.norm = validation.check_choice("norm", norm, projections.NORMS)
        self.clip_min = validation.check_number("clip_min", clip_min)
        self.clip_max = validation.check_number("clip_max", clip_max)
        if self.clip_max <= self.clip_min:
            raise ValueError(
                "Expected clip_max > clip_min. Received: "
                f"clip_min={clip_min!r}, clip_max={clip_max!r}"
            )
        if self.norm == "linf" and self.epsilon > self.clip_max - self.clip_min:
            hint = ""
            if self.clip_max - self.clip_min == 1 and self.epsilon <= 255:
                hint = (f" Pixels are in [{self.clip_min:g}, {self.clip_max:g}]: did you mean "
                        f"{self.epsilon:g}/255 = {self.epsilon / 255:.4f}?")
            raise ValueError(
                f"Expected epsilon <= clip_max - clip_min = {self.clip_max - self.clip_min:g} "
                f"for the linf norm. Received: epsilon={epsilon!r}.{hint}"
            )
        if not isinstance(targeted, bool):
            raise TypeError(f"Expected targeted to be a bool. Received: targeted={targeted!r}")
        self.targeted = targeted
        self.seed = validation.check_number("seed", seed, minimum=0, integer=True)
        resolve_jit_compile(jit_compile)  # validates the value
        self.jit_compile = jit_compile
        self._calls = 0
        self._compiled = None
        # Speed only, not part of the config: stop attacking an example once it is
        # misclassified (what an evaluation counts is unchanged; see `stop_when_fooled`).
        self.stop_when_fooled = False
        self._under_xla = False

    @property
    def cost(self):
        """Iterations per restart: gradient steps (`num_steps`), or queries for a
        gradient-free attack (which overrides this); None for an attack without
        a single count, such as an ensemble."""
        return getattr(self, "num_steps", None)

    def _compacting(self):
        """Whether this trace drops fooled examples from the batch as it goes.

        Set `stop_when_fooled = True` to have the attacks that support it (APGD,
        APGD-T, PGD) stop working on an example at the step that misclassifies it
        and attack only the rest, in a batch that shrinks. Whether an example is
        fooled comes out the same as without (for PGD: fooled at some step, not
        only at the last); the returned point of a fooled example is the first
        that fooled the model rather than the last. `tfrobust.evaluate` sets it.
        Under XLA, where shapes are static, it has no effect.
        """
        return self.stop_when_fooled and not self._under_xla

    def stopping_when_fooled(self):
        """A copy of this attack with `stop_when_fooled` set (and its own compiled function)."""
        attack = copy.copy(self)
        attack._compiled, attack.stop_when_fooled = None, True
        return attack

    # -- the one method subclasses write -------------------------------------------------
    def perturb(self, model, x, y, seed=None):
        """Graph-safe attack on a batch: returns `x_adv` with the shape of `x`.

        Args:
            model: a Keras model or a callable from images to logits.
            x: float32 images (B, H, W, C) in [clip_min, clip_max].
            y: int labels (B,) (targets if `targeted`).
            seed: shape-(2,) int32 tensor for stateless random ops.
        """
        raise NotImplementedError

    def _prepare(self, model, x, y, seed):
        """The common prologue of `perturb`: a logits function, float32 images,
        flat int32 labels, and the attack's own seed when none is given."""
        x = tf.cast(x, tf.float32)
        y = tf.cast(tf.reshape(y, [-1]), tf.int32)
        if seed is None:
            seed = tf.constant([self.seed, 0], tf.int32)
        return as_logits_fn(model), x, y, seed

    # -- calling -------------------------------------------------------------------------
    def __call__(self, model, x, y, seed=None):
        """Run the attack for evaluation.

        Eagerly this validates the inputs and runs a cached `tf.function`. The
        result never fools less than the clean input: points the model already
        misclassifies come back unchanged (untargeted attacks).
        """
        if not tf.executing_eagerly():
            return self._worst_case(model, x, y, self._seed_tensor(seed))
        x, y = self._check_inputs(x, y)
        seed = self._seed_tensor(seed)
        # Any batch size, one trace: batches of every size share the graph.
        signature = (tf.TensorSpec([None, *x.shape[1:]], x.dtype),
                     tf.TensorSpec([None], y.dtype), tf.TensorSpec([2], tf.int32))
        key = (model, signature, self.stop_when_fooled)
        if self._compiled is None or self._compiled[:3] != key:
            self._under_xla = bool(resolve_jit_compile(self.jit_compile))
            fn = tf.function(
                lambda x_, y_, s_: self._worst_case(model, x_, y_, s_),
                jit_compile=self._under_xla,
                input_signature=signature,
            )
            self._compiled = (*key, fn)
        return self._compiled[3](x, y, seed)

    def _worst_case(self, model, x, y, seed):
        """`perturb`, returning the clean input where the model is already wrong.

        An evaluation must never make the model look more accurate than on
        clean data: an untargeted attack that starts from a misclassified point
        could wander back into the right class. Targeted attacks hold targets
        in `y`, so they are returned as `perturb` made them.
        """
        x_adv = self.perturb(model, x, y, seed)
        if self.targeted:
            return x_adv
        logits = as_logits_fn(model)(x)
        wrong = tf.not_equal(tf.argmax(logits, axis=-1, output_type=tf.int32),
                             tf.cast(tf.reshape(y, [-1]), tf.int32))
        mask = tf.reshape(wrong, [-1] + [1] * (x.shape.rank - 1))
        return tf.where(mask, tf.cast(x, x_adv.dtype), x_adv)

    def _seed_tensor(self, seed):
        if seed is not None:
            return tf.cast(tf.convert_to_tensor(seed), tf.int32)
        # Eager calls advance a counter so successive batches get fresh noise.
        seed = tf.constant([self.seed, self._calls], tf.int32)
        if tf.executing_eagerly():
            self._calls += 1
        return seed

    def _check_inputs(self, x, y):
        if isinstance(x, tf.Tensor) and x.dtype.is_integer or (
            not isinstance(x, tf.Tensor) and np.issubdtype(np.asarray(x).dtype, np.integer)
        ):
            raise ValueError(
                f"Expected floating-point images in [{self.clip_min:g}, {self.clip_max:g}]. "
                f"Received: x of dtype {getattr(x.dtype, 'name', x.dtype)}. Convert 8-bit "
                "images with x.astype('float32') / 255."
            )
        x_np = validation.check_images(
            np.asarray(x), "x", clip_min=self.clip_min, clip_max=self.clip_max
        )
        y_np = validation.check_labels(np.asarray(y), name="y", num_examples=x_np.shape[0])
        return tf.convert_to_tensor(x_np), tf.convert_to_tensor(y_np)

    # -- configuration -------------------------------------------------------------------
    def _serialisable_loss(self):
        """The `loss` entry of the config; a custom callable cannot be written to a file."""
        if callable(self.loss):
            raise ValueError(
                f"Cannot serialise a {type(self).__name__} attack with a custom loss callable. "
                f"Received: loss={self.loss!r}"
            )
        return self.loss

    def get_config(self):
        return {
            "epsilon": self.epsilon,
            "norm": self.norm,
            "clip_min": self.clip_min,
            "clip_max": self.clip_max,
            "targeted": self.targeted,
            "seed": self.seed,
            "jit_compile": self.jit_compile,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


_REGISTRY = Registry("attack", Attack)
register = _REGISTRY.register


def runner_up_classes(logits, count):
    """The classes ranked 2nd to `count + 1`-th by `logits`, (B, count): the targets of
    every targeted attack (APGD-T, FAB-T). Ties rank the lower class index first."""
    return tf.math.top_k(logits, k=count + 1).indices[:, 1:]


def get(identifier, **overrides):
    """Look up an attack by name, config dict or instance.

    `get("pgd", epsilon=0.3)` builds a new attack; a dict is what `serialize`
    returns; an `Attack` instance is returned as is.
    """
    return _REGISTRY.get(identifier, **overrides)


def serialize(attack):
    """The attack's config dict, as `keras.saving.serialize_keras_object` writes it."""
    return keras.saving.serialize_keras_object(attack)


def names():
    """The registered attack names."""
    return _REGISTRY.names()
