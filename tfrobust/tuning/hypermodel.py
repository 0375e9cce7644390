"""`RobustHyperModel`: a keras-tuner search space over robust training."""

import keras
import keras_tuner as kt

from tfrobust import attacks, models, objectives, recipe
from tfrobust import data as data_lib
from tfrobust.callbacks import RobustScore
from tfrobust.tuning import search as search_lib
from tfrobust.tuning import space
from tfrobust.utils import validation

SCORE_NAME = "val_robust_score"
_VALIDATION_METRICS = ("val_loss", "val_accuracy", "val_adv_accuracy")


class RobustHyperModel(kt.HyperModel):
    """Build `RobustModel`s from a search space over robust training.

    Each trial builds the model `tfrobust train` would build from the trial's
    values (`tfrobust.recipe.build_model`): the framework (`method`), its
    weight (`trades_beta`, `alp_beta`, FreeAT `replays`, FastAT `step_ratio`),
    the ADR regularisers and their weights (`adr`, `adr_lc`, `adr_gc`,
    `adr_ls`, `adr_gs`, `adr_ce`), the head (`head`) with the HE `scale` and
    `margin`, and the Adam `learning_rate`. The threat model (epsilon, norm,
    attack steps) and the backbone are fixed: they define what robust accuracy
    means, so trials must share them.

    Default space (`tfrobust.tuning.space.entries()`; conditional entries exist only
    in the trials where their parent takes the named values):

    | name | default range | used when |
    |---|---|---|
    | `method` | pgd-at, trades, alp (also free-at, fast-at, standard) | always |
    | `trades_beta` | [1, 10], default 6 | method trades |
    | `alp_beta` | [0.1, 1], default 0.5 | method alp |
    | `replays` | [2, 8], default 4 | method free-at |
    | `step_ratio` | [1, 1.5], default 1.25 | method fast-at |
    | `adr` | False, True | method pgd-at or trades |
    | `adr_lc`, `adr_gc`, `adr_ls`, `adr_ce` | [0, 2], default 1 | adr |
    | `adr_gs` | [0, 1], default 0 | adr |
    | `head` | dense, hypersphere | always |
    | `scale` | [5, 30], default 15 (the method's HE default when it is fixed) | hypersphere |
    | `margin` | [0, 0.4], default 0.2 (likewise) | hypersphere |
    | `learning_rate` | [1e-4, 1e-2], log-uniform, default 1e-3 | always |

    `fit` trains with `model.fit`, so the trial's logs hold `val_accuracy` and
    `val_adv_accuracy` (PGD at the training epsilon) and, with `score_weight`,
    `val_robust_score = w * val_accuracy + (1 - w) * val_adv_accuracy`
    (`tfrobust.callbacks.RobustScore`). Objectives that the model never logs
    fail before the first trial trains (`tfrobust.tuning.check_objective`).

    Args:
        input_shape: the images' `(height, width, channels)`.
        num_classes: the number of classes.
        fixed: `{name: value}`: hold these entries at one value (keras-tuner `hp.Fixed`).
        search: `{name: values}`: search these entries over other values than
            the defaults: a list of choices (`{"method": ["pgd-at", "trades"]}`),
            a range `[min, max]` for numbers, or `{"min", "max", "sampling",
            "step"}`, or `{"values": [...]}` for explicit numeric choices.
        search_defaults: whether entries named in neither `fixed` nor `search`
            are searched over their default ranges (True) or fixed at their
            defaults (False: search only what `search` names).
        score_weight: if set, `fit` logs `val_robust_score` with this weight of
            clean accuracy, in [0, 1].
        model: the backbone (`tfrobust.models.get_backbone` name).
        epsilon, norm, num_steps, step_size, eval_num_steps, attack_bn,
            adr_layer, depth, width, seed, jit_compile: as the `tfrobust train`
            options of the same names.
        precision: the Keras dtype policy each trial sets; `None` keeps the
            global policy in force when the model is built.
        name: the HyperModel's name.

    Example:

    >>> hypermodel = RobustHyperModel((28, 28, 1), 10, fixed={"method": "pgd-at"},
    ...                               search={"margin": [0.1, 0.3]}, epsilon=0.3)
    >>> tuner = tfrobust.tuning.build_tuner(hypermodel, "random", max_trials=10,
    ...                                     directory="runs/tune")
    >>> tuner.search(train_ds, validation_data=val_ds, epochs=2)  # doctest: +SKIP
    """

    def __init__(self, input_shape=(28, 28, 1), num_classes=10, *, fixed=None, search=None,
                 search_defaults=True, score_weight=None, model="small_cnn", epsilon=0.3,
                 norm="linf", num_steps=10, step_size=None, eval_num_steps=20,
                 attack_bn="inference", adr_layer=None, depth=34, width=10, seed=0,
                 jit_compile="auto", precision=None, name=None):
        super().__init__(name=name)
        shape = tuple(input_shape)
        if len(shape) != 3:
            raise ValueError("Expected input_shape as (height, width, channels). Received: "
                             f"input_shape={input_shape!r}")
        self.input_shape = tuple(validation.check_number("input_shape", d, 1, integer=True)
                                 for d in shape)
        self.num_classes = validation.check_number("num_classes", num_classes, 2, integer=True)
        self.specs = space.resolve(fixed, search, search_defaults)
        self.fixed, self.search = dict(fixed or {}), dict(search or {})
        self.search_defaults = bool(search_defaults)
        if score_weight is not None:
            score_weight = validation.check_number("score_weight", score_weight, 0.0, 1.0)
        self.score_weight = score_weight
        # The setup every trial shares is checked now, not when the first trial builds it.
        attacks.PGD(epsilon=epsilon, norm=norm, num_steps=num_steps, step_size=step_size)
        attacks.PGD(epsilon=epsilon, norm=norm, num_steps=eval_num_steps)
        validation.check_choice("attack_bn", attack_bn, ("inference", "training"))
        key = model.lower().replace("-", "_") if isinstance(model, str) else model
        if key not in models.BACKBONES:
            raise ValueError(f"Expected model to be one of {sorted(models.BACKBONES)}. "
                             f"Received: model={model!r}")
        self.options = dict(
            recipe.defaults(), model=model, epsilon=epsilon, norm=norm, num_steps=num_steps,
            step_size=step_size, eval_num_steps=eval_num_steps, attack_bn=attack_bn,
            adr_layer=adr_layer, depth=depth, width=width, seed=seed, jit_compile=jit_compile,
            precision=precision,
        )

    # -- the search space ----------------------------------------------------------------
    def declare_hyperparameters(self, hp):
        space.declare(hp, self.specs)

    def options_for(self, hp):
        """The `tfrobust train` options of one trial (`{name: value}` of the train CLI)."""
        values = space.declare(hp, self.specs)
        options = dict(self.options)
        method = values["method"]
        options.update(method=method, head=values["head"], adr=bool(values.get("adr")),
                       learning_rate=values["learning_rate"])
        for hyperparameter in recipe.objective_class(method).hyperparameters:
            options[hyperparameter.name] = values.get(hyperparameter.key)
        if options["adr"]:
            options["adr_weights"] = {key: values[f"adr_{key}"]
                                      for key in objectives.regularizers.short_names()}
        else:
            options["adr_layer"] = None
        if options["head"] == "hypersphere":
            options["scale"], options["margin"] = values["scale"], values["margin"]
        if options["precision"] is None:
            options["precision"] = keras.mixed_precision.global_policy().name
        return options

    def build(self, hp):
        options = self.options_for(hp)
        info = data_lib.DatasetInfo("tuning", self.input_shape, self.num_classes, "arrays")
        model = recipe.build_model(recipe.resolve(options), info)
        # A built optimizer lets keras-tuner's checkpoints restore its state
        # (step count and moments) with the weights, so the best model loads as trained.
        model.optimizer.build(model.trainable_variables)
        return model

    # -- training ------------------------------------------------------------------------
    def fit(self, hp, model, *args, **kwargs):
        """`model.fit`, after checking the search's objective against what the model logs."""
        callbacks = list(kwargs.pop("callbacks", None) or [])
        validation_data = kwargs.get("validation_data")
        tuner, trial = _search_context(callbacks)
        if tuner is not None:
            try:
                search_lib.check_objective(tuner.oracle.objective, self,
                                           validation=validation_data is not None)
            except ValueError as error:
                # A FatalError stops the search instead of failing every trial alike.
                raise kt.errors.FatalValueError(str(error)) from None
            search_lib.record_runner(tuner, trial)
        if self.score_weight is not None:
            callbacks.insert(0, RobustScore(self.score_weight, name=SCORE_NAME))
        if validation_data is not None:
            callbacks[:0] = model.objective.callbacks()  # FastAT's guard reads validation
        return model.fit(*args, callbacks=callbacks, **kwargs)

    def logged_metrics(self, validation=True):
        """`(always, sometimes)`: the log names every trial has, and those only some have.

        Training logs `loss`, `accuracy`, `adv_accuracy` (adversarial
        frameworks) and each loss term of the framework (`natural_loss`, ...);
        validation adds `val_loss`, `val_accuracy`, `val_adv_accuracy` and,
        with `score_weight`, `val_robust_score`.
        """
        per_trial = []
        methods = self._spec("method").possible()
        adr_values = self._spec("adr").possible() if self._has("adr") else (False,)
        for method in methods:
            for adr in adr_values if method in objectives.adr.BASES else (False,):
                options = recipe.resolve(dict(self.options, method=method, adr=adr,
                                              precision="float32"))
                objective = recipe.build_objective(options)
                names = {"loss", "accuracy", *objective.term_names}
                if objective.needs_attack:
                    names.add("adv_accuracy")
                per_trial.append(names)
        always, some = set.intersection(*per_trial), set.union(*per_trial)
        if validation:
            extra = set(_VALIDATION_METRICS) | ({SCORE_NAME} if self.score_weight is not None
                                                else set())
            always |= extra
            some |= extra
        return sorted(always), sorted(some - always)

    def _has(self, name):
        return any(spec.entry.name == name for spec in self.specs)

    def _spec(self, name):
        return next(spec for spec in self.specs if spec.entry.name == name)

    def summary(self):
        """The search space, one line per entry."""
        return "\n".join(space.describe(self.specs))


def _search_context(callbacks):
    """`(tuner, trial)` from keras-tuner's own callback; `(None, None)` outside a search."""
    for callback in callbacks:
        tuner, trial = getattr(callback, "tuner", None), getattr(callback, "trial", None)
        if getattr(tuner, "oracle", None) is not None and trial is not None:
            return tuner, trial
    return None, None
