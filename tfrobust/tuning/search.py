"""Run a robust search: tuners by name, the objective checked up front, the results table."""

import json
import math
import os

import keras_tuner as kt

TUNERS = ("random", "hyperband", "bayesian")
DEFAULT_OBJECTIVE = "val_adv_accuracy"
RUNNER_FILE = "runner.json"


def objective_direction(name):
    """`"min"` for losses, `"max"` for accuracies and scores."""
    return "min" if name.endswith("loss") else "max"


def check_objective(objective, hypermodel, validation=True):
    """The keras-tuner objective(s) for `objective`, refused unless every trial logs it.

    keras-tuner finds a missing objective only after a trial has trained (and
    cannot tell the direction of `val_adv_accuracy` from its name); this check
    runs before any trial.

    Args:
        objective: a log name (`"val_adv_accuracy"`), a `keras_tuner.Objective`,
            or a list of them (a multi-objective search).
        hypermodel: a `RobustHyperModel`.
        validation: whether the search passes `validation_data` (the `val_`
            names exist only then).

    Returns:
        A `keras_tuner.Objective` (direction `"max"` for accuracies and scores,
        `"min"` for losses), or a list of them.

    Raises:
        ValueError: a name that some trial would not log, naming the valid ones.
    """
    if hasattr(objective, "objectives"):  # a keras-tuner MultiObjective
        objective = list(objective.objectives)
    if isinstance(objective, (list, tuple)):
        if not objective:
            raise ValueError("Expected at least one objective. Received: objective=[]")
        return [check_objective(o, hypermodel, validation) for o in objective]
    if isinstance(objective, kt.Objective):
        name, direction = objective.name, objective.direction
    elif isinstance(objective, str):
        name, direction = objective, objective_direction(objective)
    else:
        raise TypeError("Expected objective to be a metric name or a keras_tuner.Objective. "
                        f"Received: objective={objective!r}")
    always, sometimes = hypermodel.logged_metrics(validation=validation)
    if name not in always:
        hint = ""
        if name in sometimes:
            hint = " (it is logged only by some trials' frameworks)"
        elif name.startswith("val_") and not validation:
            hint = " (val_ metrics need validation_data)"
        elif name == "val_robust_score":
            hint = " (pass score_weight to the hypermodel to log it)"
        raise ValueError(f"Expected objective to be a metric every trial logs: {always}. "
                         f"Received: objective={name!r}{hint}")
    return kt.Objective(name, direction)


def build_tuner(hypermodel, tuner="random", objective=DEFAULT_OBJECTIVE, max_trials=10, *,
                directory=None, project_name="search", overwrite=False, seed=None,
                max_epochs=1, factor=3, hyperband_iterations=1, validation=True, **kwargs):
    """A keras-tuner tuner over `hypermodel`, with the objective checked before any trial.

    Args:
        hypermodel: a `RobustHyperModel`.
        tuner: `"random"` (RandomSearch), `"hyperband"` or `"bayesian"`
            (BayesianOptimization), or a `keras_tuner.Tuner` subclass.
        objective: see `check_objective`; `"val_adv_accuracy"` by default.
        max_trials: the number of trials (for Hyperband, a cap on its brackets).
        directory, project_name: where keras-tuner keeps the search
            (`directory/project_name`); an existing search there is resumed
            unless `overwrite`.
        seed: the oracle's random seed.
        max_epochs, factor, hyperband_iterations: Hyperband's schedule
            (`max_epochs` is the most epochs one model trains).
        validation: whether `search` will get `validation_data`.
        **kwargs: passed to the tuner (`executions_per_trial`, `distribution_strategy`, ...).
    """
    objective = check_objective(objective, hypermodel, validation)
    max_trials = _check_max_trials(max_trials)
    common = dict(hypermodel=hypermodel, objective=objective, seed=seed, directory=directory,
                  project_name=project_name, overwrite=overwrite, **kwargs)
    if isinstance(tuner, type) and issubclass(tuner, kt.Tuner):
        result = tuner(max_trials=max_trials, **common)
    elif tuner == "random":
        result = kt.RandomSearch(max_trials=max_trials, **common)
    elif tuner == "bayesian":
        result = kt.BayesianOptimization(max_trials=max_trials, **common)
    elif tuner == "hyperband":
        result = kt.Hyperband(max_epochs=max_epochs, factor=factor,
                              hyperband_iterations=hyperband_iterations, **common)
        # Hyperband sizes its brackets from max_epochs; max_trials caps the total.
        result.oracle.max_trials = max_trials
    else:
        raise ValueError(f"Expected tuner to be one of {list(TUNERS)}. Received: "
                         f"tuner={tuner!r}")
    _import_tensorboard_only_if_used(result)
    return result


def _import_tensorboard_only_if_used(tuner):
    """Let trials run without the tensorboard package unless a TensorBoard callback is given.

    keras-tuner (1.4.8) imports tensorboard's HParams plugin in every trial on
    the TensorFlow backend, to wire TensorBoard callbacks; TensorFlow 2.21 no
    longer installs tensorboard, so every trial would fail with
    `ModuleNotFoundError`.
    """
    configure = tuner._configure_tensorboard_dir

    def configure_if_used(callbacks, trial, execution=0):
        if any(type(callback).__name__ == "TensorBoard" for callback in callbacks):
            configure(callbacks, trial, execution)

    tuner._configure_tensorboard_dir = configure_if_used


def _check_max_trials(max_trials):
    if isinstance(max_trials, bool) or not isinstance(max_trials, int) or max_trials < 1:
        raise ValueError(f"Expected max_trials to be a whole number >= 1. Received: "
                         f"max_trials={max_trials!r}")
    return max_trials


def results(tuner, metrics=("val_accuracy", "val_adv_accuracy")):
    """One row per trial, in trial order: id, status, values, score and `metrics`.

    Each metric is the value at the trial's best epoch (what keras-tuner
    records). Hyperband's bookkeeping values (`tuner/epochs`, ...) are kept
    apart from the hyperparameters.
    """
    oracle = tuner.oracle
    objective = oracle.objective
    # A multi-objective search names its parts in name_to_direction.
    names = list(getattr(objective, "name_to_direction", None) or [objective.name])
    rows = []
    for trial_id in sorted(oracle.trials):
        trial = oracle.trials[trial_id]
        values = dict(trial.hyperparameters.values)
        schedule = {k: values.pop(k) for k in list(values) if k.startswith("tuner/")}
        row = {"trial": trial_id, "number": trial_number(trial_id), "status": trial.status,
               "hyperparameters": values,
               "score": _plain(trial.score), "best_step": trial.best_step,
               "tuner_id": runner(tuner, trial_id)}
        for name in dict.fromkeys([*metrics, *names]):
            row[name] = (_plain(trial.metrics.get_last_value(name))
                         if trial.metrics.exists(name) else None)
        if schedule:
            row["schedule"] = schedule
        rows.append(row)
    return rows


def record_runner(tuner, trial):
    """Note in the trial's directory which tuner (worker) runs it.

    keras-tuner's trials do not say who ran them; in a distributed search the
    results table reads this note.
    """
    path = os.path.join(tuner.get_trial_dir(trial.trial_id), RUNNER_FILE)
    with open(path, "w") as handle:
        json.dump({"tuner_id": tuner.tuner_id, "pid": os.getpid()}, handle)


def runner(tuner, trial_id):
    """The `tuner_id` that ran a trial (from `record_runner`), or None."""
    path = os.path.join(str(tuner.directory), tuner.project_name, f"trial_{trial_id}",
                        RUNNER_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        return json.load(handle).get("tuner_id")


def _plain(value):
    """Python numbers for JSON (keras-tuner keeps NumPy floats)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return float(value)


def trial_number(trial_id):
    """The trial's number as keras-tuner prints it ("Running Trial #1" for trial "0")."""
    try:
        return int(trial_id) + 1
    except (TypeError, ValueError):
        return trial_id


def format_table(rows, metrics=("val_accuracy", "val_adv_accuracy")):
    """The results as a plain-text table: trial (numbered from #1 as keras-tuner prints
    them), hyperparameters, the metrics at the trial's best epoch, that epoch (from 1), status."""
    hp_names = list(dict.fromkeys(name for row in rows for name in row["hyperparameters"]))
    header = ["trial", *hp_names, *metrics, "best epoch", "status"]
    lines = [[f"#{row.get('number', row['trial'])}",
              *(_cell(row["hyperparameters"].get(n)) for n in hp_names),
              *(_cell(row.get(m)) for m in metrics),
              "-" if row.get("best_step") is None else row["best_step"] + 1,
              row["status"]] for row in rows]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines)]
    return "\n".join("  ".join(str(cell).ljust(w) for cell, w in zip(line, widths)).rstrip()
                     for line in [header, *lines])


def _cell(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0 or (math.isfinite(value) and 1e-3 <= abs(value) < 1e4):
            return f"{value:.4g}"
        return f"{value:.3g}"
    return str(value)


def distributed_role():
    """`"chief"`, `"worker"` or None, from keras-tuner's environment variables.

    keras-tuner runs a distributed search when `KERASTUNER_ORACLE_IP` is set:
    the process whose `KERASTUNER_TUNER_ID` contains "chief" serves the oracle
    at `KERASTUNER_ORACLE_IP:KERASTUNER_ORACLE_PORT`; every other process is a
    worker that asks it for trials.
    """
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return None
    return "chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") else "worker"
