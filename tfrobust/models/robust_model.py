"""`RobustModel`: a Keras model whose `fit` trains against adversarial examples."""

import keras
import tensorflow as tf

from tfrobust import attacks as attacks_lib
from tfrobust import objectives as objectives_lib
from tfrobust.models import input_checks, latent
from tfrobust.utils import validation
from tfrobust.utils.device import resolve_jit_compile

_LOGIT_KINDS = ("inference", "attack", "train")

#: Which logits each use sees: the one definition, used by training, validation,
#: `tfrobust.evaluate`, every attack given a RobustModel, and the export. The values are
#: the head's kinds; for the hypersphere head (SPEC section 2, the HE reference code):
LOGIT_USES = {
    "loss": "train",                    # s * (cos - m * onehot(y)): the training loss's CE
    "regularizer": "attack",            # s * cos: the loss terms comparing two predictions
                                        # (TRADES' KL, ALP's pairing, ADR's regularisers)
    "training_attack": "attack",        # s * cos: crafting training examples (TRADES too)
    "evaluation": "inference",          # cos: call(), val_adv_accuracy, tfrobust.evaluate,
                                        # AutoAttack and every attack, the exported logits
    "serving_probabilities": "attack",  # s * cos: the exported softmax's temperature
}


@keras.saving.register_keras_serializable(package="tfrobust")
class RobustModel(keras.Model):
    """A backbone and a classification head, trained by a robust objective.

    `call` is pure inference: images in [0, 1] to logits. `train_step` lets the
    objective (PGD-AT by default) craft adversarial examples with the training
    attack, outside the weight tape, and minimise its loss on them.
    `test_step` reports clean accuracy and, with an evaluation attack, the
    adversarial accuracy, so `fit(..., validation_data=...)` logs
    `val_accuracy` and `val_adv_accuracy`.

    The head sees the backbone's feature vector. A head may offer different
    logits for different uses through a method
    `logits_for(features, labels, kind)` with kind in
    `"inference" | "attack" | "train"` (the hypersphere head does); an
    ordinary `keras.layers.Dense` gives the same logits for all three.
    `LOGIT_USES` says once which kind each use sees, and `logits_fn(use)`
    gives it: evaluation attacks (validation's `val_adv_accuracy`,
    `tfrobust.evaluate`, any attack called on the model) and the export see
    the inference logits, `cos` for a hypersphere head, as the HE reference
    evaluates (its network returns the cosines; the scale enters only in its
    training loss). Training attacks see `s * cos`.

    Args:
        backbone: a Keras model from images to features.
        head: a Keras layer from features to logits.
        objective: a training framework (`tfrobust.objectives`), name or instance.
        attack: the training attack (`tfrobust.attacks`); required by
            adversarial objectives.
        eval_attack: the attack `test_step` uses. `None` means PGD-20 with
            step size `2.5 * epsilon / 20` at the training attack's epsilon
            and norm; `False` turns adversarial validation off.
        attack_bn: batch normalisation mode while crafting training attacks:
            `"inference"` (moving statistics, as the HE and TRADES code do) or
            `"training"` (batch statistics, as the ADR TensorFlow code does).
        seed: seed of the random starts drawn in `train_step`/`test_step`.
        regularizers: ADR regularisers (`tfrobust.objectives.regularizers`) to
            add to a PGD-AT or TRADES objective: shorthand for
            `objective=ADR(base, regularizers=...)`.
        train_clean_accuracy: log `accuracy` (clean accuracy of the training
            batches) in `fit`. PGD-AT, FastAT and FreeAT pay one extra
            inference forward pass per batch for it (5% of a PGD-10 AT
            epoch, measured in `benchmarks/`); `False` drops that pass and the
            `accuracy` training log. Validation logs `val_accuracy` either way.

    Example:

    >>> model = RobustModel(
    ...     backbone=tfrobust.models.small_cnn(),
    ...     head=keras.layers.Dense(10),
    ...     attack=tfrobust.attacks.PGD(epsilon=0.3, step_size=0.01, num_steps=40))
    >>> model.compile(optimizer="adam")
    >>> model.fit(train_ds, validation_data=test_ds, epochs=1)  # doctest: +SKIP
    """

    def __init__(self, backbone, head, objective="pgd-at", attack=None, eval_attack=None,
                 attack_bn="inference", seed=0, regularizers=None, train_clean_accuracy=True,
                 **kwargs):
        super().__init__(**kwargs)
        if not isinstance(backbone, keras.Layer):
            raise TypeError(
                "Expected backbone to be a Keras model or layer. "
                f"Received: backbone of type {type(backbone).__name__}"
            )
        if not isinstance(head, keras.Layer):
            raise TypeError(
                f"Expected head to be a Keras layer. Received: head of type {type(head).__name__}"
            )
        self.backbone = backbone
        self.head = head
        self.objective = objectives_lib.get(objective)
        if regularizers:
            self.objective = _with_regularizers(self.objective, regularizers)
        if isinstance(self.objective, objectives_lib.ADR) and self.objective.layer is None:
            # ADR reads the backbone's reference latent unless told otherwise; the
            # resolved name is what get_config saves.
            self.objective = self.objective.with_layer(latent.reference_latent(backbone))
        self.attack = attacks_lib.get(attack) if attack is not None else None
        if self.objective.needs_attack and self.attack is None:
            raise ValueError(
                f"Expected a training attack for objective {self.objective!r}. Received: "
                "attack=None. Pass e.g. attack=tfrobust.attacks.PGD(epsilon=0.3, num_steps=40)."
            )
        if eval_attack is None and self.attack is not None:
            eval_attack = attacks_lib.PGD(
                epsilon=self.attack.epsilon, norm=self.attack.norm, num_steps=20,
                step_size=2.5 * self.attack.epsilon / 20, clip_min=self.attack.clip_min,
                clip_max=self.attack.clip_max, seed=self.attack.seed + 1,
            )
        self.eval_attack = (attacks_lib.get(eval_attack) if eval_attack not in (None, False)
                            else None)
        if attack_bn not in ("inference", "training"):
            raise ValueError(
                "Expected attack_bn to be 'inference' or 'training'. "
                f"Received: attack_bn={attack_bn!r}"
            )
        self.attack_bn = attack_bn
        if not isinstance(train_clean_accuracy, bool):
            raise TypeError("Expected train_clean_accuracy to be True or False. Received: "
                            f"train_clean_accuracy={train_clean_accuracy!r}")
        self.train_clean_accuracy = train_clean_accuracy
        self.seed = int(seed)
        self._seed_generator = keras.random.SeedGenerator(self.seed)
        if not head.built and getattr(backbone, "output_shape", None) is not None:
            # Create the head's weights now, inside the caller's distribution
            # scope, rather than at the first train_step (in replica context).
            head.build(backbone.output_shape)
        if backbone.built and head.built:
            # All weights exist: saving and re-compiling after loading (which
            # builds the optimizer's slots) need not wait for a first call.
            self.built = True
        self._view = objectives_lib.base.ModelView(self)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.term_trackers = [keras.metrics.Mean(name=n) for n in self.objective.term_names]
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.adv_accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="adv_accuracy")

    # -- inference -----------------------------------------------------------------------
    def features(self, x, training=False):
        """The backbone's feature vector, (B, D)."""
        return self.backbone(x, training=training)

    def head_logits(self, features, labels=None, kind="inference"):
        """The head's logits for one use: `"inference"`, `"attack"` or `"train"`."""
        if kind not in _LOGIT_KINDS:
            raise ValueError(f"Expected kind in {_LOGIT_KINDS}. Received: kind={kind!r}")
        if hasattr(self.head, "logits_for"):
            return self.head.logits_for(features, labels, kind)
        return self.head(features)

    def use_logits(self, features, use, labels=None):
        """The head's logits on `features` for one use of `LOGIT_USES`."""
        if use not in LOGIT_USES:
            raise ValueError(f"Expected use in {tuple(LOGIT_USES)}. Received: use={use!r}")
        return self.head_logits(features, labels, kind=LOGIT_USES[use])

    def call(self, inputs, training=False):
        return self.use_logits(self.features(inputs, training=training), "evaluation")

    def logits_fn(self, use="evaluation"):
        """A function from images to the float32 logits of one use (`LOGIT_USES`).

        The backbone runs in inference mode, except for `"training_attack"`
        with `attack_bn="training"`.
        """
        if use not in LOGIT_USES or use in ("loss", "regularizer"):
            uses = tuple(u for u in LOGIT_USES if u not in ("loss", "regularizer"))
            raise ValueError(f"Expected use in {uses} (the loss uses are for objectives). "
                             f"Received: use={use!r}")
        training = use == "training_attack" and self.attack_bn == "training"

        def logits_fn(x):
            return tf.cast(self.use_logits(self.features(x, training=training), use), tf.float32)

        return logits_fn

    def attack_logits_fn(self):
        """The function the training attack maximises its loss through."""
        return self.logits_fn("training_attack")

    @property
    def num_classes(self):
        """Number of classes: the width of the head's output."""
        units = getattr(self.head, "units", None)
        if units is None:
            shape = self.head.compute_output_shape(self.backbone.output_shape)
            units = shape[-1]
        return int(units)

    # -- training ------------------------------------------------------------------------
    def _minimize(self, loss_fn, watch=()):
        """Record `loss_fn()` on a tape, apply one optimizer update, return the output and
        the gradients of the tensors in `watch`.

        The gradient is that of `scale_loss(loss)`: under `tf.distribute` each
        replica's loss is divided by the number of replicas, since gradients
        are summed across replicas. The scaling enters as the tape's output
        gradient, so the loss the objective returns (and the log) stays unscaled.
        """
        with tf.GradientTape() as tape:
            for tensor in watch:
                tape.watch(tensor)
            out = loss_fn()
        variables = self.trainable_variables
        factor = self.scale_loss(tf.ones_like(out.loss))
        grads = tape.gradient(out.loss, variables + list(watch), output_gradients=factor)
        self.optimizer.apply(grads[:len(variables)], variables)
        return out, grads[len(variables):]

    def scale_loss(self, loss):
        """The loss to differentiate: divided by the replica count, then optimizer-scaled."""
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        scaled = loss / tf.cast(replicas, loss.dtype) if replicas > 1 else loss
        return self.optimizer.scale_loss(scaled)

    def _batch(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if y is None:
            raise ValueError("Expected (images, labels) batches. Received: batches without labels.")
        x = input_checks.check_batch_values(input_checks.check_batch_spec(x, y))
        y = tf.cast(tf.reshape(y, [-1]), tf.int32)
        return x, y, sample_weight

    def train_step(self, data):
        """Craft (outside the tape), then the objective's update(s) through `_minimize`.

        As Keras' own trainer: the loss trackers are weighted by the batch size, so a
        short last batch counts for what it holds.
        """
        x, y, sample_weight = self._batch(data)
        objective = self.objective
        seed = self._seed_generator.next()
        x_adv = objective.craft(self._view, x, y, seed) if objective.needs_attack else None
        clean_logits = None
        if self.train_clean_accuracy and not objective.computes_clean_logits:
            clean_logits = self.logits_fn("evaluation")(x)  # before the update, no tape
        out = objective.update(self._view, x, x_adv, y, sample_weight, self._minimize)
        if out.clean_logits is not None:
            clean_logits = tf.stop_gradient(out.clean_logits)
        batch_size = tf.shape(x)[0]
        self.loss_tracker.update_state(out.loss, sample_weight=batch_size)
        for tracker in self.term_trackers:
            tracker.update_state(out.terms[tracker.name], sample_weight=batch_size)
        if clean_logits is not None and self.train_clean_accuracy:
            self.accuracy_tracker.update_state(y, clean_logits, sample_weight)
        if out.adv_logits is not None:
            self.adv_accuracy_tracker.update_state(y, out.adv_logits, sample_weight)
        return self._logs(train=True, adversarial=out.adv_logits is not None)

    def test_step(self, data):
        x, y, sample_weight = self._batch(data)
        evaluation_logits = self.logits_fn("evaluation")
        logits = evaluation_logits(x)
        loss = objectives_lib.base.weighted_mean(
            objectives_lib.base.sparse_ce(logits, y), sample_weight
        )
        self.loss_tracker.update_state(loss, sample_weight=tf.shape(x)[0])
        self.accuracy_tracker.update_state(y, logits, sample_weight)
        if self.eval_attack is not None:
            x_adv = self.eval_attack.perturb(evaluation_logits, x, y, self._seed_generator.next())
            self.adv_accuracy_tracker.update_state(y, evaluation_logits(x_adv), sample_weight)
        return self._logs(train=False, adversarial=self.eval_attack is not None)

    def _logs(self, train, adversarial):
        trackers = [self.loss_tracker]
        if train:
            trackers += self.term_trackers
        if self.train_clean_accuracy or not train:
            trackers.append(self.accuracy_tracker)
        if adversarial:
            trackers.append(self.adv_accuracy_tracker)
        if _multi_worker(tf.distribute.get_strategy()):
            # Keras 3 averages the logs of the workers with strategy.reduce(..., axis=0),
            # which needs an axis to reduce (keras-team/keras#20585): give it one.
            return {t.name: tf.reshape(t.result(), [1]) for t in trackers}
        return {t.name: t.result() for t in trackers}

    @property
    def metrics(self):
        return [self.loss_tracker, *self.term_trackers, self.accuracy_tracker,
                self.adv_accuracy_tracker]

    # -- Keras entry points with tfrobust's defaults and checks --------------------------
    def compile(self, optimizer="adam", loss=None, metrics=None, jit_compile="auto", **kwargs):
        """Configure the optimizer; the objective defines the loss and the metrics.

        `jit_compile="auto"` (the default) picks the faster path per device, as
        measured in `benchmarks/` (XLA off on CPU, Keras' choice elsewhere).
        """
        if loss is not None:
            raise ValueError(
                "RobustModel's loss is defined by its objective; compile() takes no loss. "
                f"Received: loss={loss!r}"
            )
        if metrics:
            raise ValueError(
                "RobustModel logs loss, accuracy and adv_accuracy itself; compile() takes no "
                f"metrics. Received: metrics={metrics!r}"
            )
        super().compile(optimizer=optimizer, jit_compile=resolve_jit_compile(jit_compile),
                        **kwargs)

    def compile_from_config(self, config):
        """Re-compile a loaded model with its saved optimizer (and its state)."""
        config = keras.saving.deserialize_keras_object(config)
        config = {k: v for k, v in config.items() if k not in ("loss", "metrics")
                  or v is not None}
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def fit(self, x=None, y=None, *args, validation_data=None, **kwargs):
        input_checks.check_attack_budgets(self)
        requested = kwargs.get("batch_size", args[0] if args else None)
        if requested is not None:
            validation.check_number("batch_size", requested, minimum=1, integer=True)
        batch_size = input_checks.check_fit_data(self, x, y, "x")
        if batch_size is None:
            batch_size = requested or 32
        if self.objective.build(self._view, batch_size):
            # The objective made new state: the cached train function must see it.
            self.train_function = None
        if validation_data is not None:
            input_checks.check_fit_data(self, *_split_validation(validation_data),
                                        "validation_data")
        if isinstance(x, tf.data.Dataset) and not args:
            # A dataset shuffles itself; Keras would only warn that it cannot.
            kwargs.setdefault("shuffle", False)
        self._build_optimizer()
        return super().fit(x, y, *args, validation_data=validation_data, **kwargs)

    def _build_optimizer(self):
        """Create the optimizer's variables before the train step is traced.

        Without a distribution strategy Keras 3 leaves them to the first trace, and a
        `tf.function` that creates variables is traced a second time: every `fit`
        then traced its train step (PGD loops and all) twice. Keras builds them
        beforehand itself only under a strategy; this does it in every case, once
        the network is built (the update is the same: benchmarks/README.md).
        """
        if self.optimizer is None or self.optimizer.built:
            return
        if all(layer.built for layer in self._flatten_layers()):
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        input_checks.check_fit_data(self, x, y, "x")
        return super().evaluate(x, y, *args, **kwargs)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Keras' build before `fit`/`evaluate`, made to work across workers.

        Keras 3 learns the shapes of a distributed batch by reducing it with
        `strategy.reduce`, which `MultiWorkerMirroredStrategy` refuses eagerly
        ("Attempt to convert a value (PerReplica...) with an unsupported type",
        keras-team/keras#20585). One replica's share has the shapes it needs.
        """
        strategy = getattr(self, "_distribute_strategy", None)
        if iterator is not None and _multi_worker(strategy):
            if not all(layer.built for layer in self._flatten_layers()):
                for _, _, batches in iterator:
                    data_batch = tf.nest.map_structure(
                        lambda v: strategy.experimental_local_results(v)[0], next(batches))
                    break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    # -- wrapping an existing classifier -------------------------------------------------
    @classmethod
    def from_classifier(cls, classifier, feature_layer=None, **kwargs):
        """Wrap a functional Keras classifier that outputs logits.

        The classifier is split at `feature_layer` (a layer name; by default
        the input of its last layer): the part up to that layer's output
        becomes the backbone, the rest the head. Weights are shared with
        `classifier`, not copied.

        Args:
            classifier: a functional `keras.Model` from images to logits.
            feature_layer: name of the layer whose output is the feature vector.
            **kwargs: passed to `RobustModel` (objective, attack, ...).
        """
        if not isinstance(classifier, keras.Model) or not hasattr(classifier, "_nodes_by_depth"):
            raise TypeError(
                "Expected a functional keras.Model (built with keras.Input). "
                f"Received: classifier of type {type(classifier).__name__}"
            )
        if feature_layer is None:
            features = classifier.layers[-1].input
        else:
            try:
                features = classifier.get_layer(feature_layer).output
            except ValueError:
                names = [layer.name for layer in classifier.layers]
                raise ValueError(
                    f"Expected feature_layer to name a layer of the classifier ({names}). "
                    f"Received: feature_layer={feature_layer!r}"
                ) from None
        if len(classifier.outputs) != 1:
            raise ValueError(
                "Expected a classifier with one output (the logits). "
                f"Received: {len(classifier.outputs)} outputs."
            )
        inputs = classifier.inputs[0] if len(classifier.inputs) == 1 else classifier.inputs
        backbone = keras.Model(inputs, features, name=f"{classifier.name}_backbone")
        # Keras builds a functional model from an intermediate tensor by cloning
        # the input; the layers (and so the weights) stay shared.
        head = keras.Model(features, classifier.outputs[0], name=f"{classifier.name}_head")
        return cls(backbone, head, **kwargs)

    # -- serialisation -------------------------------------------------------------------
    def get_config(self):
        config = super().get_config()
        config.update(
            backbone=keras.saving.serialize_keras_object(self.backbone),
            head=keras.saving.serialize_keras_object(self.head),
            objective=keras.saving.serialize_keras_object(self.objective),
            attack=keras.saving.serialize_keras_object(self.attack) if self.attack else None,
            eval_attack=(keras.saving.serialize_keras_object(self.eval_attack)
                         if self.eval_attack else False),
            attack_bn=self.attack_bn,
            seed=self.seed,
            train_clean_accuracy=self.train_clean_accuracy,
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for key in ("backbone", "head", "objective", "attack", "eval_attack"):
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(
                    config[key], custom_objects=custom_objects
                )
        return cls(**config)


def _multi_worker(strategy):
    """Whether `strategy` is a MultiWorkerMirroredStrategy spanning several workers."""
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())


def _with_regularizers(objective, regularizers):
    """The ADR objective that adds `regularizers` to a PGD-AT or TRADES objective."""
    if isinstance(objective, objectives_lib.TRADES):
        return objectives_lib.ADR("trades", regularizers, beta=objective.beta,
                                  init_std=objective.init_std)
    if type(objective) is objectives_lib.PGDAT:
        return objectives_lib.ADR("pgd-at", regularizers)
    raise ValueError(
        "Expected regularizers with a PGD-AT or TRADES objective (or objective=ADR(...)). "
        f"Received: objective={objective!r}"
    )


def _split_validation(validation_data):
    if isinstance(validation_data, (tuple, list)):
        if len(validation_data) not in (2, 3):
            raise ValueError(
                "Expected validation_data as (x, y) or (x, y, sample_weight). "
                f"Received: a {type(validation_data).__name__} of length {len(validation_data)}"
            )
        return validation_data[0], validation_data[1]
    return validation_data, None
