"""Recipes: a `RobustModel` from one flat table of options, as `tfrobust train` and tuning build it.

The options are those of `tfrobust train` (`config.json`'s `options`): the backbone
(`model`, `dropout`, `initialization`, `depth`, `width`, `base_width`), the framework (`method`, its
hyperparameters such as `beta` or `replays`, and `adr` with `adr_weights` and `adr_layer`),
the head (`head`, `scale`, `margin`), the threat model and attacks (`norm`, `epsilon`,
`num_steps`, `step_size`, `eval_num_steps`, `attack_bn`), `precision`, the optimisation
(`optimizer`, `learning_rate`, `lr_schedule`, `momentum`, `weight_decay`), `seed` and
`jit_compile`. What depends on the framework comes from the objective's
class (`tfrobust.objectives.Objective`: `hyperparameters`, `he_defaults`,
`uses_attack_steps`, `callbacks`), so a new objective needs no entry here.

`resolve(options)` fills the defaults that depend on other options and refuses
inconsistent ones; `build_model(options, info)` builds and compiles the model.
"""

import inspect

from tfrobust import objectives
from tfrobust.models import registry as backbones
from tfrobust.utils import validation

#: The options that decide the model, with their defaults (None: resolved from others).
MODEL_DEFAULTS = {
    "model": "small_cnn",
    "method": "pgd-at",
    "norm": "linf",
    "epsilon": 0.3,
    "num_steps": 10,
    "step_size": None,          # None: 2.5 * epsilon / num_steps
    "eval_num_steps": 20,
    "head": "dense",            # or "hypersphere" (HE)
    "scale": None,              # HE s; None: the reference default of the method
    "margin": None,             # HE m; None: the reference default of the method
    "adr": False,               # add the ADR regularisers (pgd-at or trades)
    "adr_weights": None,        # e.g. "lc=1,gc=1,ls=1,gs=0,ce=1"; None: the reference weights
    "adr_layer": None,          # backbone layer to regularise; None: its reference latent
    "attack_bn": "inference",   # batch norm mode while crafting training attacks
    "precision": "float32",     # or "mixed_bfloat16"
    "optimizer": "adam",        # or "sgd": PyTorch's SGD, as the CIFAR references train
    "learning_rate": None,      # None: 1e-3 for adam, 0.1 for sgd
    "lr_schedule": "constant",  # or "piecewise" (PGD-AT's), "cyclic" (FastAT's)
    "momentum": None,           # sgd only; None: 0.9
    "weight_decay": None,       # sgd only, PyTorch's L2 on the gradient; None: 0
    "dropout": None,            # small_cnn, wide_resnet; None: the builder's default (0.5, 0)
    "initialization": None,     # small_cnn: "keras" (default) or "reference"; ResNets: "reference"
    "depth": 34,                # wide_resnet only
    "width": 10,                # wide_resnet only
    "base_width": None,         # preact_resnet18 only: its first stage's filters; None: 64
    "seed": 0,
    "jit_compile": "auto",
}
PRECISIONS = ("float32", "mixed_bfloat16")
OPTIMIZERS = ("adam", "sgd")
#: The learning rate of each optimizer when none is given.
LEARNING_RATES = {"adam": 1e-3, "sgd": 0.1}
HEADS = ("dense", "hypersphere")
NORMS = ("linf", "l2")


def methods():
    """The names `--method` offers: every registered objective that stands on its own."""
    return tuple(name for name in objectives.names() if objectives.get_class(name).selectable)


def objective_class(method):
    """The objective class of a method name, with an error naming the choices."""
    if method not in methods():
        raise ValueError(f"Expected method in {list(methods())}. Received: method={method!r}")
    return objectives.get_class(method)


def hyperparameters():
    """`{option name: [(method, Hyperparameter), ...]}` over every method."""
    table = {}
    for method in methods():
        for hyperparameter in objectives.get_class(method).hyperparameters:
            table.setdefault(hyperparameter.name, []).append((method, hyperparameter))
    return table


def defaults():
    """`MODEL_DEFAULTS` and every method's hyperparameters (None: the method's default)."""
    return {**MODEL_DEFAULTS, **{name: None for name in hyperparameters()}}


def resolve(options):
    """The options with the defaults that depend on others filled in; bad ones refused.

    Fills each of the method's hyperparameters, the HE scale and margin (the method's
    reference values), the ADR weights and layer (the backbone's reference latent,
    written into `config.json` so every result says which tensor ADR read), and the
    backbone's dropout and initialisation. Raises ValueError naming the option.
    """
    options = dict(options)
    method = options["method"]
    cls = objective_class(method)
    options["precision"] = validation.check_choice("precision", options["precision"], PRECISIONS)
    options["head"] = validation.check_choice("head", options["head"], HEADS)
    options["norm"] = validation.check_choice("norm", options["norm"], NORMS)
    _resolve_hyperparameters(options, cls)
    if options["head"] == "hypersphere":
        scale, margin = cls.he_defaults
        options["scale"] = scale if options["scale"] is None else options["scale"]
        options["margin"] = margin if options["margin"] is None else options["margin"]
    elif options["scale"] is not None or options["margin"] is not None:
        raise ValueError("Expected --scale and --margin only with --head hypersphere. "
                         f"Received: head={options['head']!r}")
    if options["adr"]:
        if method not in objectives.adr.BASES:
            raise ValueError(f"Expected --adr with method {' or '.join(objectives.adr.BASES)}. "
                             f"Received: method={method!r}")
        options["adr_weights"] = objectives.regularizers.parse_weights(options["adr_weights"])
        if options["adr_layer"] is None:
            options["adr_layer"] = backbones.reference_latent_name(options["model"])
    elif options["adr_weights"] is not None or options["adr_layer"] is not None:
        raise ValueError("Expected --adr-weights and --adr-layer only with --adr. Received: "
                         f"adr_weights={options['adr_weights']!r}, "
                         f"adr_layer={options['adr_layer']!r}")
    options["base_width"] = _resolve_base_width(options["model"], options["base_width"])
    options["dropout"] = _resolve_dropout(options["model"], options["dropout"])
    options["initialization"] = _resolve_initialization(options["model"],
                                                        options["initialization"])
    _check_attack_options(options, cls)
    _resolve_optimization(options)
    return options


def _resolve_optimization(options):
    """The optimizer's options: its learning rate, and momentum and weight decay for SGD."""
    from tfrobust import optimizers

    optimizer = options["optimizer"] = validation.check_choice(
        "optimizer", options["optimizer"], OPTIMIZERS)
    options["lr_schedule"] = validation.check_choice(
        "lr_schedule", options["lr_schedule"], optimizers.SCHEDULES)
    if options["learning_rate"] is None:
        options["learning_rate"] = LEARNING_RATES[optimizer]
    validation.check_number("learning_rate", options["learning_rate"], minimum=0.0,
                            strict_minimum=True)
    if optimizer == "sgd":
        options["momentum"] = 0.9 if options["momentum"] is None else options["momentum"]
        options["weight_decay"] = (0.0 if options["weight_decay"] is None
                                   else options["weight_decay"])
        validation.check_number("momentum", options["momentum"], minimum=0.0)
        if options["momentum"] >= 1:
            raise ValueError(f"Expected momentum < 1. Received: momentum={options['momentum']!r}")
        validation.check_number("weight_decay", options["weight_decay"], minimum=0.0)
    elif options["momentum"] is not None or options["weight_decay"] is not None:
        raise ValueError("Expected --momentum and --weight-decay only with --optimizer sgd. "
                         f"Received: optimizer={optimizer!r}, momentum={options['momentum']!r}, "
                         f"weight_decay={options['weight_decay']!r}")


def _resolve_hyperparameters(options, cls):
    """The method's hyperparameters at their defaults unless given; others refused if given."""
    own = {h.name: h for h in cls.hyperparameters}
    for name, users in hyperparameters().items():
        value = options.get(name)
        if name not in own:
            if value is not None:
                methods_taking = sorted({method for method, _ in users})
                raise ValueError(f"Expected {name} only with method {' or '.join(methods_taking)}. "
                                 f"Received: {name}={value!r} with method={options['method']!r}")
            options[name] = value
            continue
        hyperparameter = own[name]
        if value is None:
            value = hyperparameter.default
        options[name] = validation.check_number(
            name, value, minimum=hyperparameter.minimum, integer=hyperparameter.kind == "int",
            strict_minimum=hyperparameter.strict)


def _check_attack_options(options, cls):
    """Numbers that would train nothing, or nothing robust, refused before any work."""
    validation.check_number("eval_num_steps", options["eval_num_steps"], minimum=1, integer=True)
    validation.check_number("num_steps", options["num_steps"], minimum=0, integer=True)
    if options["num_steps"] == 0 and cls.uses_attack_steps:
        raise ValueError(
            f"Expected num_steps >= 1 for method {options['method']!r}: with 0 steps the training "
            f"attack returns its random start. Received: num_steps={options['num_steps']}")
    if options["step_size"] is not None:
        validation.check_number("step_size", options["step_size"], minimum=0.0,
                                strict_minimum=True)


def _resolve_base_width(model, base_width):
    """preact_resnet18's first-stage filters: the value given, else the reference's 64."""
    if backbones.backbone_key(model) != "preact_resnet18":
        if base_width is not None:
            raise ValueError(f"Expected --base-width only with model 'preact_resnet18'. "
                             f"Received: base_width={base_width!r} with model={model!r}")
        return None
    if base_width is None:
        return 64
    return validation.check_number("base_width", base_width, minimum=1, integer=True)


def _resolve_dropout(model, dropout):
    """The backbone's dropout rate: the value given, else its builder's default."""
    parameter = inspect.signature(
        backbones.BACKBONES[backbones.backbone_key(model)]).parameters.get("dropout")
    if parameter is None:
        if dropout not in (None, 0, 0.0):
            raise ValueError(f"Expected no --dropout with model {model!r}, which has no dropout "
                             f"layer. Received: dropout={dropout!r}")
        return None
    if dropout is None:
        return parameter.default
    dropout = validation.check_number("dropout", dropout, minimum=0.0)
    if dropout >= 1.0:
        raise ValueError(f"Expected dropout < 1. Received: dropout={dropout!r}")
    return dropout


def _resolve_initialization(model, initialization):
    """The backbone's initialisation: the value given, else its default (the first offered)."""
    offered = backbones.initializations(model)
    if initialization is None:
        return offered[0]
    if initialization not in offered:
        raise ValueError(f"Expected initialization in {list(offered)} for model {model!r}. "
                         f"Received: initialization={initialization!r}")
    return initialization


def build_objective(options):
    """The training framework of resolved options: the method, or ADR on it."""
    if options["adr"]:
        return objectives.ADR.from_options(options)
    return objective_class(options["method"]).from_options(options)


def build_model(options, info, steps_per_epoch=None):
    """The compiled `RobustModel` of resolved options, for data described by `info`.

    `steps_per_epoch`, the training batches of an epoch, is needed by a learning-rate
    schedule other than "constant" (with `options["epochs"]`). Sets the global Keras dtype
    policy to `options["precision"]` (callers restore it).
    """
    import keras

    from tfrobust import attacks, models

    keras.mixed_precision.set_global_policy(options["precision"])
    backbone_kwargs = {}
    if backbones.backbone_key(options["model"]) == "wide_resnet":
        backbone_kwargs = {"depth": options["depth"], "width": options["width"]}
    if options.get("base_width") is not None:
        backbone_kwargs["base_width"] = options["base_width"]
    if options.get("dropout") is not None:
        backbone_kwargs["dropout"] = options["dropout"]
    if len(backbones.initializations(options["model"])) > 1:
        backbone_kwargs["initialization"] = (options.get("initialization")
                                             or backbones.initializations(options["model"])[0])
    backbone = models.get_backbone(options["model"], info.image_shape, **backbone_kwargs)
    head = _head(options, info.num_classes)
    epsilon = options["epsilon"]
    attack = attacks.PGD(
        epsilon=epsilon, norm=options["norm"], num_steps=options["num_steps"],
        step_size=options["step_size"], seed=options["seed"],
    )
    eval_attack = attacks.PGD(
        epsilon=epsilon, norm=options["norm"], num_steps=options["eval_num_steps"],
        step_size=2.5 * epsilon / max(options["eval_num_steps"], 1), seed=options["seed"] + 1,
    )
    objective = build_objective(options)
    model = models.RobustModel(
        backbone, head, objective=objective,
        attack=attack if objective.needs_attack else None,
        eval_attack=eval_attack, attack_bn=options["attack_bn"], seed=options["seed"],
    )
    model.compile(optimizer=build_optimizer(options, steps_per_epoch,
                                            objective.updates_per_batch),
                  jit_compile=options["jit_compile"])
    return model


def build_optimizer(options, steps_per_epoch=None, updates_per_batch=1):
    """The optimizer of resolved options, its rate scheduled over the run's updates."""
    import keras

    from tfrobust import optimizers

    if options.get("lr_schedule", "constant") != "constant" and not steps_per_epoch:
        raise ValueError(f"Expected the number of batches per epoch for lr_schedule="
                         f"{options['lr_schedule']!r}. Received: steps_per_epoch="
                         f"{steps_per_epoch!r}")
    optimizer = options.get("optimizer") or "adam"
    # Unresolved options (None) take the defaults `resolve` would give.
    rate = options.get("learning_rate") or LEARNING_RATES[optimizer]
    learning_rate = optimizers.schedule(
        options.get("lr_schedule") or "constant", rate, options.get("epochs"),
        steps_per_epoch and steps_per_epoch * updates_per_batch)
    if optimizer == "sgd":
        momentum = options.get("momentum")
        return optimizers.SGD(learning_rate, momentum=0.9 if momentum is None else momentum,
                              weight_decay=options.get("weight_decay") or 0.0)
    return keras.optimizers.Adam(learning_rate)


def _head(options, num_classes):
    """The classification head; its logits stay float32 whatever the policy (attacks compare
    them closely)."""
    import keras

    if options["head"] == "hypersphere":
        from tfrobust.layers import HypersphereDense

        return HypersphereDense(num_classes, scale=options["scale"], margin=options["margin"],
                                name="head", dtype="float32")
    # As the backbone's initialisation has it (zero for the reference small_cnn).
    return keras.layers.Dense(
        num_classes, name="head", dtype="float32",
        kernel_initializer=backbones.head_initializer(options["model"],
                                                      options.get("initialization")))
