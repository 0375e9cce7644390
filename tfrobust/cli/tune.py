"""`tfrobust tune`: search robust-training hyperparameters with keras-tuner."""

import json
import os
import shutil

from tfrobust.cli import train

# Options that mean what they mean for `tfrobust train`, with its defaults.
_SHARED = ("data", "num_classes", "model", "norm", "epsilon", "num_steps", "step_size",
           "eval_num_steps", "attack_bn", "adr_layer", "precision", "epochs", "batch_size",
           "limit", "val_limit", "depth", "width", "seed", "jit_compile")
_TUNE_DEFAULTS = {
    "tuner": "random",              # random | hyperband | bayesian
    "max_trials": 10,               # trials in all (a cap for hyperband)
    "objective": "val_adv_accuracy",
    "score_weight": None,           # w: log val_robust_score = w clean + (1 - w) robust
    "hyperband_factor": 3,          # Hyperband's reduction factor (max_epochs is epochs)
    "search_defaults": True,        # search unnamed entries over their default ranges
    "search": None,                 # [search] table: {name: choices or [min, max]}
    "fixed": None,                  # [fixed] table: {name: value}
    "output": None,
    "overwrite": False,
}


def defaults():
    """Every option of `tfrobust tune` with its default (the shared ones as for train)."""
    shared = train.defaults()
    return {**{key: shared[key] for key in _SHARED}, **_TUNE_DEFAULTS}


SECTIONS = ("search", "fixed")
# Options a resumed search may change: how many trials, and where its files are.
_RESUMABLE = ("max_trials", "output", "overwrite")
CONFIG_FILE = "tune_config.json"
RESULTS_FILE = "results.json"
BEST_MODEL_FILE = "best_model.keras"
PROJECT = "search"


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "tune",
        help="search training hyperparameters for robust accuracy (keras-tuner)",
        description=(
            "Search robust-training hyperparameters (framework, beta, ADR weights, head, HE "
            "scale and margin, learning rate) with keras-tuner, optimising robust validation "
            "accuracy. Writes DIR/results.json, DIR/best_model.keras and the keras-tuner "
            "project DIR/search; running the same command again resumes the search. "
            "Options come from the defaults, then --config FILE, then the flags given."
        ),
    )
    parser.add_argument("--config", help="a .toml or .json file: options as for tfrobust train "
                                         "(data, model, epsilon, epochs, limit, ...), tuner "
                                         "settings, and [search] and [fixed] tables")
    parser.add_argument("--tuner", choices=("random", "hyperband", "bayesian"),
                        help="search algorithm (default random)")
    parser.add_argument("--max-trials", type=int, help="number of trials (default 10)")
    parser.add_argument("--objective",
                        help="metric to maximise (default val_adv_accuracy; losses are minimised)")
    parser.add_argument("--output", help="directory of the search (required, here or in the "
                                         "config); an earlier search there is resumed")
    parser.add_argument("--overwrite", action="store_true", default=None,
                        help="discard an earlier search in --output and start again")
    parser.set_defaults(run=run)
    return parser


def resolve_options(args):
    """The search's configuration from defaults, the config file and the flags."""
    from tfrobust.cli import config
    from tfrobust.tuning import TUNERS, space

    file_values = config.read_config_file(args.config) if args.config else {}
    all_defaults = defaults()
    cli_values = {key: getattr(args, key, None) for key in all_defaults}
    options = config.resolve(all_defaults, file_values, cli_values)
    for section in SECTIONS:
        options[section] = config.check_section(section, options[section], space.entries_by_name())
    if options["tuner"] not in TUNERS:
        raise ValueError(f"Expected tuner in {list(TUNERS)}. Received: tuner={options['tuner']!r}")
    if options["output"] is None:
        raise ValueError("Expected --output DIR (or output in the config file): the search "
                         "lives there and resumes from there. Received: output=None")
    if isinstance(options["jit_compile"], str) and options["jit_compile"] in ("true", "false"):
        options["jit_compile"] = options["jit_compile"] == "true"
    return options


def build_hypermodel(options, info):
    """The `RobustHyperModel` of a search's options and the data's info."""
    from tfrobust import tuning

    return tuning.RobustHyperModel(
        info.image_shape, info.num_classes, fixed=options["fixed"], search=options["search"],
        search_defaults=options["search_defaults"], score_weight=options["score_weight"],
        model=options["model"], epsilon=options["epsilon"], norm=options["norm"],
        num_steps=options["num_steps"], step_size=options["step_size"],
        eval_num_steps=options["eval_num_steps"], attack_bn=options["attack_bn"],
        adr_layer=options["adr_layer"], depth=options["depth"], width=options["width"],
        seed=options["seed"], jit_compile=options["jit_compile"],
        precision=options["precision"],
    )


def _prepare_output(options):
    """Start a search in the output directory, or check that it resumes the same search."""
    out = options["output"]
    if os.path.exists(out) and not os.path.isdir(out):
        raise FileExistsError(f"Expected a directory. Received: --output {out!r} is a file")
    path = os.path.join(out, CONFIG_FILE)
    comparable = _comparable(options)
    if os.path.isfile(path) and not options["overwrite"]:
        with open(path) as handle:
            earlier = json.load(handle)
        changed = sorted(key for key in set(earlier) | set(comparable)
                         if earlier.get(key) != comparable.get(key))
        if changed:
            details = ", ".join(f"{k}: {earlier.get(k)!r} -> {comparable.get(k)!r}"
                                for k in changed)
            raise FileExistsError(
                f"Expected the configuration of the search in {out!r} to resume it (only "
                f"{list(_RESUMABLE)} may change). Received changed options: {details}. Pass "
                "--overwrite to start a new search there, or choose another --output.")
        return True
    if options["overwrite"]:
        for name in (RESULTS_FILE, BEST_MODEL_FILE):
            if os.path.exists(os.path.join(out, name)):
                os.remove(os.path.join(out, name))
        shutil.rmtree(os.path.join(out, PROJECT), ignore_errors=True)
    os.makedirs(out, exist_ok=True)
    with open(path, "w") as handle:
        json.dump(comparable, handle, indent=2)
    return False


def _comparable(options):
    """The options that define the search, as JSON would give them back."""
    return json.loads(json.dumps({k: v for k, v in options.items() if k not in _RESUMABLE}))


def run(args):
    options = resolve_options(args)
    import keras

    from tfrobust import data, tuning

    role = tuning.search.distributed_role()
    info = data.info(options["data"], num_classes=options["num_classes"])
    hypermodel = build_hypermodel(options, info)
    tuning.check_objective(options["objective"], hypermodel)  # before anything is written
    resuming = _prepare_output(options) if role != "worker" else False
    tuner = tuning.build_tuner(
        hypermodel, options["tuner"], options["objective"], options["max_trials"],
        directory=options["output"], project_name=PROJECT, overwrite=False,
        seed=options["seed"], max_epochs=options["epochs"], factor=options["hyperband_factor"],
    )
    train_ds = data.load(options["data"], split="train", batch_size=options["batch_size"],
                         limit=options["limit"], seed=options["seed"])
    val_ds = data.load(options["data"], split="test", batch_size=256,
                       limit=options["val_limit"])
    done = _finished(tuner) if role != "worker" else 0
    print(f"tfrobust tune: {options['tuner']} search of {options['max_trials']} trials for "
          f"{options['objective']} on {info.name}, {options['norm']} epsilon "
          f"{options['epsilon']:g} -> {options['output']}"
          + (f" (resuming: {done} trials finished)" if resuming else "")
          + (f" [{role} {tuner.tuner_id}]" if role else ""))
    print(hypermodel.summary())
    keras.utils.set_random_seed(options["seed"])
    previous_policy = keras.mixed_precision.global_policy()
    try:
        tuner.search(train_ds, validation_data=val_ds, epochs=options["epochs"], verbose=2)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    if role == "worker":
        print(f"tfrobust tune: worker {tuner.tuner_id} finished; the chief writes the results.")
        return 0
    return _report(options, tuner, hypermodel)


def _finished(tuner):
    return sum(trial.status == "COMPLETED" for trial in tuner.oracle.trials.values())


def _report(options, tuner, hypermodel):
    from tfrobust import tuning
    from tfrobust.utils.provenance import provenance

    objective = tuner.oracle.objective
    metrics = list(dict.fromkeys(["val_accuracy", "val_adv_accuracy", objective.name]))
    rows = tuning.results(tuner, metrics)
    print(tuning.format_table(rows, metrics))
    print(f"(each trial's metrics at its best epoch by {objective.name}, as keras-tuner "
          "records them)")
    out = options["output"]
    best_trials = tuner.oracle.get_best_trials(1)
    best = None
    if best_trials:
        trial = best_trials[0]
        model = tuner.get_best_models(1)[0]
        model.save(os.path.join(out, BEST_MODEL_FILE))
        best = {"trial": trial.trial_id, "score": float(trial.score),
                "hyperparameters": dict(trial.hyperparameters.values),
                "model": BEST_MODEL_FILE}
        epoch = "" if trial.best_step is None else f" at epoch {trial.best_step + 1}"
        print(f"Best trial #{tuning.search.trial_number(trial.trial_id)}: {objective.name} "
              f"{trial.score:.4f}{epoch} -> {os.path.join(out, BEST_MODEL_FILE)}")
    else:
        print("No trial finished; no best model.")
    report = {
        "objective": {"name": objective.name, "direction": objective.direction},
        "tuner": options["tuner"], "max_trials": options["max_trials"],
        "validation": {"split": "test", "examples": options["val_limit"]},
        "search_space": hypermodel.summary().splitlines(),
        "trials": rows, "best": best, "options": options, **provenance(),
    }
    with open(os.path.join(out, RESULTS_FILE), "w") as handle:
        json.dump(report, handle, indent=2, default=str)
    return 0
