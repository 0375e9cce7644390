"""`tfrobust train`: train a robust classifier and write its artefacts."""

import dataclasses
import json
import os
import shutil
import time

DEFAULTS = {
    "data": "mnist-sample",
    "model": "small_cnn",
    "method": "pgd-at",
    "norm": "linf",
    "epsilon": 0.3,
    "num_steps": 10,
    "step_size": None,          # None: 2.5 * epsilon / num_steps
    "eval_num_steps": 20,
    "beta": None,               # TRADES (default 6.0) and ALP (default 0.5)
    "replays": 4,               # FreeAT
    "step_ratio": 1.25,         # FastAT: FGSM step / epsilon
    "head": "dense",            # or "hypersphere" (HE)
    "scale": None,              # HE s; None: the reference default of the method
    "margin": None,             # HE m; None: the reference default of the method
    "adr": False,               # add the ADR regularisers (pgd-at or trades)
    "adr_weights": None,        # e.g. "lc=1,gc=1,ls=1,gs=0,ce=1"; None: the reference weights
    "adr_layer": None,          # backbone layer to regularise; None: the backbone's reference latent
    "attack_bn": "inference",   # batch norm mode while crafting training attacks
    "precision": "float32",     # or "mixed_bfloat16"
    "epochs": 5,
    "batch_size": 128,
    "learning_rate": 1e-3,
    "limit": None,              # training examples (None: all)
    "val_limit": 500,           # validation examples scored after every epoch
    "eval_limit": None,         # test examples of the final evaluation (None: all)
    "dropout": None,            # small_cnn, wide_resnet; None: the builder's default (0.5, 0)
    "initialization": None,     # small_cnn: "keras" (default) or "reference"; ResNets: "reference"
    "depth": 34,                # wide_resnet only
    "width": 10,                # wide_resnet only
    "seed": 0,
    "jit_compile": "auto",
    "output": None,             # None: runs/train-<timestamp>
    "overwrite": False,
    "distribute": "none",       # or "mirrored", "multi-worker" (TF_CONFIG)
    "backup_every": "epoch",    # or a number of batches: OUTPUT/backup for resuming
}

METHODS = ("pgd-at", "trades", "alp", "free-at", "fast-at", "standard")
PRECISIONS = ("float32", "mixed_bfloat16")
DEFAULT_BETA = {"trades": 6.0, "alp": 0.5}
HEADS = ("dense", "hypersphere")
# HE reference defaults (s, m) per framework (SPEC section 2); FastAT and standard
# training have none in the reference and take PGD-AT's.
DEFAULT_HE = {"pgd-at": (15.0, 0.2), "trades": (15.0, 0.2), "alp": (20.0, 0.3),
               "free-at": (10.0, 0.2), "fast-at": (15.0, 0.2), "standard": (15.0, 0.2)}


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "train",
        help="train a robust classifier",
        description=(
            "Train a classifier with adversarial training and write DIR/model.keras, "
            "DIR/history.json and DIR/config.json. Options come from the defaults, then "
            "--config FILE, then the flags given."
        ),
    )
    parser.add_argument("--config", help="a .toml or .json file of options (keys as the flags)")
    parser.add_argument("--data", help=f"dataset name or file (default {DEFAULTS['data']})")
    parser.add_argument("--model", help=f"backbone (default {DEFAULTS['model']})")
    parser.add_argument("--method", choices=METHODS, help="training framework (default pgd-at)")
    parser.add_argument("--beta", type=float,
                        help="TRADES KL weight (default 6.0) or ALP pairing weight (default 0.5)")
    parser.add_argument("--replays", type=int, help="FreeAT minibatch replays (default 4)")
    parser.add_argument("--step-ratio", type=float, help="FastAT FGSM step / epsilon (default 1.25)")
    parser.add_argument("--head", choices=HEADS,
                        help="classification head: dense (default) or hypersphere (HE)")
    parser.add_argument("--scale", type=float,
                        help="HE scale s (default per method: 15, ALP 20, FreeAT 10)")
    parser.add_argument("--margin", type=float,
                        help="HE margin m (default per method: 0.2, ALP 0.3)")
    parser.add_argument("--adr", action="store_true", default=None,
                        help="add the ADR regularisers to pgd-at or trades")
    parser.add_argument("--adr-weights",
                        help="ADR term weights, e.g. lc=1,gc=1,ls=1,gs=0,ce=1 (local/global "
                             "compactness, local/global smoothness, conditional entropy)")
    parser.add_argument("--adr-layer",
                        help="backbone layer ADR acts on (default: the backbone's reference "
                             "latent, flatten on small_cnn, features on the ResNets)")
    parser.add_argument("--attack-bn", choices=("inference", "training"),
                        help="batch norm mode while crafting training attacks (default inference)")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="float32 (default) or mixed_bfloat16 (perturbations stay float32)")
    parser.add_argument("--norm", choices=("linf", "l2"), help="threat model norm (default linf)")
    parser.add_argument("--epsilon", type=float, help="attack budget (default 0.3)")
    parser.add_argument("--num-steps", type=int, help="PGD steps of the training attack (default 10)")
    parser.add_argument("--step-size", type=float, help="PGD step (default 2.5*epsilon/num_steps)")
    parser.add_argument("--eval-num-steps", type=int, help="PGD steps of the evaluation (default 20)")
    parser.add_argument("--epochs", type=int, help="training epochs (default 5)")
    parser.add_argument("--batch-size", type=int, help="batch size (default 128)")
    parser.add_argument("--learning-rate", type=float, help="Adam learning rate (default 1e-3)")
    parser.add_argument("--limit", type=int, help="use only the first N training examples")
    parser.add_argument("--val-limit", type=int, help="validation examples per epoch (default 500)")
    parser.add_argument("--eval-limit", type=int, help="test examples in the final evaluation")
    parser.add_argument("--dropout", type=float,
                        help="dropout rate of small_cnn (after fc1, default 0.5 as in the "
                             "reference) or wide_resnet (in every block, default 0)")
    parser.add_argument("--initialization", choices=("keras", "reference"),
                        help="small_cnn weights: keras (Glorot, the default) or reference "
                             "(TRADES' SmallCNN, zero dense head); the ResNets have only their "
                             "reference initialisation")
    parser.add_argument("--depth", type=int, help="wide_resnet depth (default 34)")
    parser.add_argument("--width", type=int, help="wide_resnet width (default 10)")
    parser.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.add_argument("--jit-compile", choices=("auto", "true", "false"),
                        help="XLA: auto picks the measured faster path per device")
    parser.add_argument("--output", help="output directory (default runs/train-<timestamp>)")
    parser.add_argument("--overwrite", action="store_true", default=None,
                        help="replace the artefacts of an earlier run in --output")
    parser.add_argument("--distribute", choices=("none", "mirrored", "multi-worker"),
                        help="none (default), mirrored (this machine's devices) or multi-worker "
                             "(MultiWorkerMirroredStrategy configured by TF_CONFIG)")
    parser.add_argument("--backup-every",
                        help="back up to OUTPUT/backup every epoch (default) or every N batches; "
                             "the same command resumes an interrupted run from its last backup")
    parser.set_defaults(run=run)
    return parser


def resolve_options(args):
    """The run's full configuration from defaults, the config file and the flags."""
    from tfrobust.cli import config

    file_values = config.read_config_file(args.config) if args.config else {}
    cli_values = {key: getattr(args, key, None) for key in DEFAULTS}
    options = config.resolve(DEFAULTS, file_values, cli_values)
    if isinstance(options["jit_compile"], str) and options["jit_compile"] in ("true", "false"):
        options["jit_compile"] = options["jit_compile"] == "true"
    if options["method"] not in METHODS:
        raise ValueError(f"Expected method in {list(METHODS)}. Received: method={options['method']!r}")
    if options["precision"] not in PRECISIONS:
        raise ValueError(
            f"Expected precision in {list(PRECISIONS)}. Received: precision={options['precision']!r}")
    if options["head"] not in HEADS:
        raise ValueError(f"Expected head in {list(HEADS)}. Received: head={options['head']!r}")
    if options["head"] == "hypersphere":
        default_scale, default_margin = DEFAULT_HE[options["method"]]
        options["scale"] = default_scale if options["scale"] is None else options["scale"]
        options["margin"] = default_margin if options["margin"] is None else options["margin"]
    elif options["scale"] is not None or options["margin"] is not None:
        raise ValueError("Expected --scale and --margin only with --head hypersphere. "
                         f"Received: head={options['head']!r}")
    if options["adr"]:
        options["adr_weights"] = parse_adr_weights(options["adr_weights"])
        if options["adr_layer"] is None:
            from tfrobust.models.registry import reference_latent_name

            # Written into config.json, so every result says which tensor ADR read.
            options["adr_layer"] = reference_latent_name(options["model"])
    elif options["adr_weights"] is not None or options["adr_layer"] is not None:
        raise ValueError("Expected --adr-weights and --adr-layer only with --adr. Received: "
                         f"adr_weights={options['adr_weights']!r}, "
                         f"adr_layer={options['adr_layer']!r}")
    options["dropout"] = _resolve_dropout(options["model"], options["dropout"])
    options["initialization"] = _resolve_initialization(options["model"],
                                                        options["initialization"])
    if options["beta"] is None and options["method"] in DEFAULT_BETA:
        options["beta"] = DEFAULT_BETA[options["method"]]
    _check_run_options(options)
    if options["output"] is None:
        options["output"] = os.path.join("runs", time.strftime("train-%Y%m%d-%H%M%S"))
    return options


def _resolve_dropout(model, dropout):
    """The backbone's dropout rate: the value given, else its builder's default."""
    import inspect

    from tfrobust.models.registry import BACKBONES, backbone_key
    from tfrobust.utils import validation

    parameter = inspect.signature(BACKBONES[backbone_key(model)]).parameters.get("dropout")
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
    from tfrobust.models.registry import initializations

    offered = initializations(model)
    if initialization is None:
        return offered[0]
    if initialization not in offered:
        raise ValueError(f"Expected initialization in {list(offered)} for model {model!r}. "
                         f"Received: initialization={initialization!r}")
    return initialization


# Methods whose training attack is the PGD of --num-steps (FreeAT replays, FastAT takes one step).
_PGD_METHODS = ("pgd-at", "trades", "alp")


def _check_run_options(options):
    """Numbers that would train nothing, or nothing robust, refused before any work."""
    from tfrobust.cli import resume
    from tfrobust.utils import distribution, validation

    if options["distribute"] not in distribution.STRATEGIES:
        raise ValueError(f"Expected distribute in {list(distribution.STRATEGIES)}. Received: "
                         f"distribute={options['distribute']!r}")
    options["backup_every"] = resume.parse_backup_every(options["backup_every"])
    for key in ("epochs", "batch_size", "eval_num_steps"):
        validation.check_number(key, options[key], minimum=1, integer=True)
    validation.check_number("num_steps", options["num_steps"], minimum=0, integer=True)
    if options["num_steps"] == 0 and options["method"] in _PGD_METHODS:
        raise ValueError(
            f"Expected num_steps >= 1 for method {options['method']!r}: with 0 steps the training "
            f"attack returns its random start. Received: num_steps={options['num_steps']}")
    if options["step_size"] is not None:
        validation.check_number("step_size", options["step_size"], minimum=0.0,
                                strict_minimum=True)
    validation.check_number("learning_rate", options["learning_rate"], minimum=0.0,
                            strict_minimum=True)


def _check_output(directory, overwrite):
    """Refuse to clobber an earlier run; creates nothing (that waits until training works)."""
    artefacts = ("model.keras", "history.json", "config.json")
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise FileExistsError(f"Expected a directory. Received: --output {directory!r} is a file")
    existing = [a for a in artefacts if os.path.exists(os.path.join(directory, a))]
    if existing and not overwrite:
        raise FileExistsError(
            f"Expected an output directory without earlier results. Received: --output "
            f"{directory!r} already holds {existing}; pass --overwrite to replace them."
        )


ADR_TERMS = {"lc": "local-compactness", "gc": "global-compactness", "ls": "local-smoothness",
             "gs": "global-smoothness", "ce": "conditional-entropy"}
ADR_REFERENCE = {"lc": 1.0, "gc": 1.0, "ls": 1.0, "gs": 0.0, "ce": 1.0}


def parse_adr_weights(value):
    """`"lc=1,gc=0.5"` (or a dict) to the full weight table, unnamed terms at the reference."""
    weights = dict(ADR_REFERENCE)
    if value is None:
        return weights
    if isinstance(value, str):
        pairs = [item.split("=", 1) for item in value.split(",") if item.strip()]
        if any(len(pair) != 2 for pair in pairs):
            raise ValueError("Expected adr_weights like 'lc=1,gc=1,ls=1,gs=0,ce=1'. "
                             f"Received: adr_weights={value!r}")
        value = {k.strip(): v.strip() for k, v in pairs}
    unknown = sorted(set(value) - set(ADR_TERMS))
    if unknown:
        raise ValueError(f"Expected adr_weights keys among {sorted(ADR_TERMS)}. Received: "
                         f"adr_weights={value!r}")
    for key, weight in value.items():
        try:
            weights[key] = float(weight)
        except ValueError:
            raise ValueError(f"Expected a number for ADR weight {key!r}. Received: "
                             f"adr_weights={value!r}") from None
    return weights


def build_objective(options):
    """The training framework named by `method`, with its hyperparameters."""
    from tfrobust import objectives

    method = options["method"]
    if options["adr"]:
        if method not in ("pgd-at", "trades"):
            raise ValueError("Expected --adr with method pgd-at or trades. Received: "
                             f"method={method!r}")
        weights = parse_adr_weights(options["adr_weights"])
        regs = [objectives.regularizers.get(ADR_TERMS[k], weight=w) for k, w in weights.items()]
        return objectives.ADR(method, regs, layer=options["adr_layer"],
                              beta=options["beta"] if method == "trades" else 6.0)
    if method == "trades":
        return objectives.TRADES(beta=options["beta"])
    if method == "alp":
        return objectives.ALP(beta=options["beta"])
    if method == "free-at":
        return objectives.FreeAT(replays=options["replays"])
    if method == "fast-at":
        return objectives.FastAT(step_ratio=options["step_ratio"])
    return objectives.get(method)


def build_model(options, info):
    """The RobustModel a run trains, from its resolved options and the data's info."""
    import keras

    from tfrobust import attacks, models

    keras.mixed_precision.set_global_policy(options["precision"])
    backbone_kwargs = {}
    if options["model"].replace("-", "_") == "wide_resnet":
        backbone_kwargs = {"depth": options["depth"], "width": options["width"]}
    if options.get("dropout") is not None:
        backbone_kwargs["dropout"] = options["dropout"]
    if len(models.registry.initializations(options["model"])) > 1:
        backbone_kwargs["initialization"] = (options.get("initialization")
                                             or models.registry.initializations(options["model"])[0])
    backbone = models.get_backbone(options["model"], info.image_shape, **backbone_kwargs)
    # Logits in float32 whatever the policy: attacks compare them closely.
    if options["head"] == "hypersphere":
        from tfrobust.layers import HypersphereDense

        head = HypersphereDense(info.num_classes, scale=options["scale"],
                                margin=options["margin"], name="head", dtype="float32")
    else:
        # As the backbone's initialisation has it (zero for the reference small_cnn).
        head = keras.layers.Dense(
            info.num_classes, name="head", dtype="float32",
            kernel_initializer=models.registry.head_initializer(options["model"],
                                                                options.get("initialization")))
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
    model.compile(optimizer=keras.optimizers.Adam(options["learning_rate"]),
                  jit_compile=options["jit_compile"])
    return model


def run(args):
    options = resolve_options(args)
    from tfrobust.utils import distribution

    _check_output(options["output"], options["overwrite"])
    multi_worker = options["distribute"] == "multi-worker"
    task = distribution.cluster_task() if multi_worker else distribution.ClusterTask(
        "worker", 0, 1, True)
    # First of all TensorFlow work: a multi-worker strategy starts this process's server.
    strategy = distribution.strategy(options["distribute"])
    import keras

    from tfrobust import backup, data
    from tfrobust.cli import resume

    backup_dir = resume.backup_dir(options["output"], task)
    resume.check_options(backup_dir, options)
    state = backup.read_state(backup_dir)
    info = data.info(options["data"])
    train_ds = data.load(options["data"], split="train", batch_size=options["batch_size"],
                         limit=options["limit"], seed=options["seed"])
    val_ds = data.load(options["data"], split="test", batch_size=256, limit=options["val_limit"])
    test_ds = data.load(options["data"], split="test", batch_size=256,
                        limit=options["eval_limit"])
    if multi_worker:
        # Batches are global: every worker builds them all and keeps its share.
        train_ds, val_ds, test_ds = (distribution.shard_by_data(d)
                                     for d in (train_ds, val_ds, test_ds))
    # A resumed run's epochs see the shuffle orders of an uninterrupted run's.
    backup.skip_epochs(train_ds, state["epoch"] if state else 0)
    keras.utils.set_random_seed(options["seed"])
    previous_policy = keras.mixed_precision.global_policy()
    try:
        return _train(options, info, train_ds, val_ds, test_ds, strategy, task, backup_dir,
                      state)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _train(options, info, train_ds, val_ds, test_ds, strategy, task, backup_dir, state):
    from tfrobust.backup import BackupAndRestore, read_state
    from tfrobust.cli import resume

    with strategy.scope():
        model = build_model(options, info)
    resumed = f", resuming after epoch {state['epoch']}" if state else ""
    print(f"tfrobust train: {options['method']} of {options['model']} on {info.name} "
          f"({info.image_shape}, {info.num_classes} classes), {options['norm']} epsilon "
          f"{options['epsilon']:g}, PGD-{options['num_steps']} -> {options['output']}{resumed}")
    started = time.time()
    # The backup outlives a failure of anything after fit (evaluation, saving).
    backup = BackupAndRestore(backup_dir, save_freq=options["backup_every"],
                              delete_checkpoint=False)
    callbacks = [backup]
    if options["method"] == "fast-at":
        from tfrobust.callbacks import CatastrophicOverfittingGuard

        callbacks.insert(0, CatastrophicOverfittingGuard())  # back up the weights it restores
    created = [d for d in (options["output"], backup_dir) if not os.path.isdir(d)]
    resume.write_options(backup_dir, options)
    try:
        model.fit(train_ds, validation_data=val_ds, epochs=options["epochs"], verbose=1,
                  callbacks=callbacks)
    except BaseException:
        if read_state(backup_dir) is None:
            # Nothing was trained: leave no trace of the run.
            for directory in reversed(created):
                shutil.rmtree(directory, ignore_errors=True)
        raise
    train_seconds = time.time() - started
    print(f"Evaluating on the test split (PGD-{options['eval_num_steps']})...")
    test = model.evaluate(test_ds, return_dict=True, verbose=1)
    if task.is_chief:
        _write_artefacts(options, info, model, backup.history, test, train_seconds,
                         resumed_after=state["epoch"] if state else 0)
    shutil.rmtree(backup_dir, ignore_errors=True)
    print(f"Test accuracy: clean {test['accuracy']:.4f}, adversarial "
          f"{test.get('adv_accuracy', float('nan')):.4f} "
          f"(PGD-{options['eval_num_steps']}, {options['norm']} epsilon {options['epsilon']:g}); "
          f"trained in {train_seconds:.0f} s. Artefacts in {options['output']}"
          + ("" if task.is_chief else f" (written by the chief, not this {task.type})"))
    return 0


def _write_artefacts(options, info, model, history, test, train_seconds, resumed_after):
    """model.keras, history.json, config.json, each written whole (renamed into place)."""
    from tfrobust.cli.resume import write_atomic
    from tfrobust.utils.provenance import provenance

    out = options["output"]
    os.makedirs(out, exist_ok=True)
    write_atomic(os.path.join(out, "model.keras"), model.save)
    epochs = [{"epoch": i + 1, **logs} for i, logs in enumerate(history)]

    def write_json(value):
        def write(path):
            with open(path, "w") as handle:
                json.dump(value, handle, indent=2, default=str)
        return write

    write_atomic(os.path.join(out, "history.json"), write_json(
        {"epochs": epochs, "test": {k: float(v) for k, v in test.items()},
         "train_seconds": round(train_seconds, 2), "resumed_after_epoch": resumed_after}))
    write_atomic(os.path.join(out, "config.json"), write_json(
        {"options": options, "data_info": dataclasses.asdict(info),
         "model": model.get_config(), **provenance()}))
