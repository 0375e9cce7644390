"""keras-tuner searches over robust training: the space, the objective, tuners, CLI, workers."""

import argparse
import json
import os
import re
import socket
import subprocess
import sys

import keras
import keras_tuner as kt
import numpy as np
import pytest

from tfrobust import data, objectives, tuning
from tfrobust.cli import tune
from tfrobust.cli.main import main
from tfrobust.layers import HypersphereDense
from tfrobust.tuning import RobustHyperModel

HERE = os.path.dirname(os.path.abspath(__file__))
# A small, fast trial: PGD-2 training, PGD-3 validation.
SMALL = dict(num_steps=2, eval_num_steps=3, seed=0)
# PGD-AT with a dense head: trials differ in the learning rate only (fast to train).
PLAIN = dict(fixed={"method": "pgd-at", "adr": False, "head": "dense"})


@pytest.fixture(scope="module")
def datasets():
    train = data.load("mnist-sample", "train", batch_size=64, limit=512, seed=0)
    val = data.load("mnist-sample", "test", batch_size=128, limit=128)
    return train, val


def declared(hypermodel, values=None):
    """The hypermodel's HyperParameters with `values` set (active entries not given: defaults)."""
    hp = kt.HyperParameters()
    hp.values.update(values or {})
    hypermodel.declare_hyperparameters(hp)
    return hp


# -- the search space --------------------------------------------------------------------
def test_default_space_is_conditional_and_builds_what_tfrobust_train_builds():
    hypermodel = RobustHyperModel((28, 28, 1), 10, **SMALL)
    hp = declared(hypermodel)
    names = {p.name for p in hp.space}
    assert names == {"method", "trades_beta", "alp_beta", "adr", "adr_lc", "adr_gc", "adr_ls",
                     "adr_gs", "adr_ce", "head", "scale", "margin", "learning_rate"}
    # Defaults: PGD-AT, dense head, Adam 1e-3; beta, ADR weights and HE knobs inactive.
    assert hp.values == {"method": "pgd-at", "adr": False, "head": "dense",
                         "learning_rate": 1e-3}
    method = next(p for p in hp.space if p.name == "method")
    assert list(method.values) == ["pgd-at", "trades", "alp"]
    scale = next(p for p in hp.space if p.name == "scale")
    assert (scale.min_value, scale.max_value, scale.default) == (5.0, 30.0, 15.0)
    rate = next(p for p in hp.space if p.name == "learning_rate")
    assert (rate.min_value, rate.max_value, rate.sampling) == (1e-4, 1e-2, "log")

    hp = declared(hypermodel, {"method": "trades", "trades_beta": 3.0, "adr": True,
                               "adr_gc": 0.5, "head": "hypersphere", "scale": 12.0,
                               "margin": 0.1, "learning_rate": 2e-3})
    assert hp.values["adr_lc"] == 1.0 and hp.values["adr_gs"] == 0.0  # reference weights
    options = hypermodel.options_for(hp)
    assert (options["method"], options["beta"], options["adr"]) == ("trades", 3.0, True)
    assert options["adr_weights"] == {"lc": 1.0, "gc": 0.5, "ls": 1.0, "gs": 0.0, "ce": 1.0}
    model = hypermodel.build(hp)
    objective = model.objective
    assert isinstance(objective, objectives.ADR) and objective.base == "trades"
    assert objective.beta == 3.0
    weights = {r.name: r.weight for r in objective.regularizers}
    assert weights["global_compactness"] == 0.5 and weights["local_smoothness"] == 1.0
    assert isinstance(model.head, HypersphereDense)
    assert (model.head.scale, model.head.margin) == (12.0, 0.1)
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(2e-3)
    assert model.attack.num_steps == 2 and model.eval_attack.num_steps == 3
    assert model.attack.epsilon == 0.3


def test_fixing_and_narrowing_entries():
    # A fixed ALP with an HE head starts from ALP's HE reference (s=20, m=0.3);
    # the margin is searched over the given range, ADR cannot apply to ALP.
    hypermodel = RobustHyperModel(fixed={"method": "alp", "head": "hypersphere"},
                                  search={"margin": [0.1, 0.3]}, **SMALL)
    hp = declared(hypermodel)
    space = {p.name: p for p in hp.space}
    assert set(space) == {"method", "alp_beta", "head", "scale", "margin", "learning_rate"}
    assert isinstance(space["method"], kt.engine.hyperparameters.Fixed)
    assert (space["margin"].min_value, space["margin"].max_value) == (0.1, 0.3)
    assert hp.values["scale"] == 20.0 and hp.values["margin"] == 0.3
    assert hp.values["alp_beta"] == 0.5
    # Only what `search` names: the rest held at the defaults.
    only = RobustHyperModel(search={"learning_rate": {"min": 1e-4, "max": 1e-3,
                                                      "sampling": "log"},
                                    "method": ["pgd-at", "trades"]},
                            search_defaults=False, **SMALL)
    searched = [s.entry.name for s in only.specs if s.searched]
    assert searched == ["method", "learning_rate"]
    assert {s.entry.name: s.values[0] for s in only.specs if s.fixed} == {
        "trades_beta": 6.0, "adr": False, "head": "dense"}
    # Explicit numeric choices.
    choices = RobustHyperModel(search={"learning_rate": {"values": [1e-3, 3e-3]}}, **PLAIN)
    rate = next(p for p in declared(choices).space if p.name == "learning_rate")
    assert isinstance(rate, kt.engine.hyperparameters.Choice)
    assert list(rate.values) == [1e-3, 3e-3]


@pytest.mark.parametrize("kwargs,match", [
    (dict(fixed={"methd": "pgd-at"}), r"Expected fixed keys among .*Received unknown keys: "
                                      r"\['methd'\]"),
    (dict(search={"scales": [5, 10]}), r"Received unknown keys: \['scales'\]"),
    (dict(search_defaults=False), "Expected at least one hyperparameter to search"),
    (dict(fixed={"method": "standard", "head": "dense", "learning_rate": 1e-3}),
     "empty search space"),
    (dict(search={"learning_rate": [1e-3, 1e-3]}, search_defaults=False), "empty search space"),
    (dict(fixed={"head": "dense"}, search={"scale": [5, 10]}),
     r"Expected scale \(HE scale s\) only when head can be one of \['hypersphere'\]"),
    (dict(fixed={"method": "alp", "adr": True}), "Expected adr"),
    (dict(search={"margin": [0.4, 0.1]}), "Expected min <= max for margin"),
    (dict(search={"method": ["pgd-at", "madry"]}), "method='madry'"),
    (dict(search={"learning_rate": {"min": 0, "max": 1e-2, "sampling": "log"}}),
     "learning_rate=0"),
    (dict(fixed={"margin": -0.1}), r"margin=-0.1"),
    (dict(fixed={"head": "dense"}, search={"head": ["dense"]}), "either fixed or searched"),
    (dict(score_weight=1.5), "score_weight=1.5"),
    (dict(num_steps=-1), "num_steps=-1"),
    (dict(epsilon=-0.1), "epsilon=-0.1"),
    (dict(model="resnet50"), "model='resnet50'"),
])
def test_bad_search_spaces_are_refused_with_the_name_and_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RobustHyperModel(**kwargs)


# -- the objective -----------------------------------------------------------------------
def test_objectives_the_model_never_logs_fail_before_any_trial(tmp_path):
    hypermodel = RobustHyperModel(**SMALL)
    with pytest.raises(ValueError, match=r"Received: objective='val_acc'") as error:
        tuning.build_tuner(hypermodel, "random", "val_acc", 2, directory=str(tmp_path))
    assert "val_adv_accuracy" in str(error.value) and "val_loss" in str(error.value)
    # Logged by TRADES only, so not by every trial of a search over frameworks.
    with pytest.raises(ValueError, match="only by some trials"):
        tuning.build_tuner(hypermodel, "random", "natural_loss", 2, directory=str(tmp_path))
    with pytest.raises(ValueError, match="score_weight"):
        tuning.build_tuner(hypermodel, "random", "val_robust_score", 2,
                           directory=str(tmp_path))
    with pytest.raises(ValueError, match="need validation_data"):
        tuning.check_objective("val_adv_accuracy", hypermodel, validation=False)
    assert os.listdir(tmp_path) == []  # no tuner, no trial
    # Known names get their direction (keras-tuner cannot infer adv_accuracy's).
    assert tuning.check_objective("val_adv_accuracy", hypermodel).direction == "max"
    assert tuning.check_objective("val_loss", hypermodel).direction == "min"
    trades = RobustHyperModel(fixed={"method": "trades"}, **SMALL)
    assert tuning.check_objective("natural_loss", trades).name == "natural_loss"
    # A multi-objective search: every part is checked.
    both = tuning.check_objective(["val_adv_accuracy", "val_loss"], hypermodel)
    assert [(o.name, o.direction) for o in both] == [("val_adv_accuracy", "max"),
                                                     ("val_loss", "min")]
    with pytest.raises(ValueError, match="objective='adv_acc'"):
        tuning.check_objective(["val_accuracy", "adv_acc"], hypermodel)


def test_an_objective_changed_behind_the_tuner_stops_the_search_before_training(
        tmp_path, datasets):
    tuner = tuning.build_tuner(RobustHyperModel(**PLAIN, **SMALL), "random", max_trials=1,
                               directory=str(tmp_path))
    tuner.oracle.objective = kt.Objective("val_acc", "max")
    with pytest.raises(ValueError, match="objective='val_acc'"):
        tuner.search(*datasets[:1], validation_data=datasets[1], epochs=1, verbose=0)
    assert not os.path.exists(tmp_path / "search" / "trial_0" / "checkpoint.weights.h5")


# -- searches ----------------------------------------------------------------------------
@pytest.mark.slow
def test_two_trial_search_optimises_robust_accuracy_and_its_best_model_reloads(
        tmp_path, datasets):
    train, val = datasets
    keras.utils.set_random_seed(0)  # the initial weights, whatever ran before
    hypermodel = RobustHyperModel(**PLAIN, search={"learning_rate": [3e-4, 3e-3]}, **SMALL)
    tuner = tuning.build_tuner(hypermodel, "random", "val_adv_accuracy", max_trials=2,
                               directory=str(tmp_path), seed=1)
    tuner.search(train, validation_data=val, epochs=1, verbose=0)

    rows = tuning.results(tuner)
    assert [row["status"] for row in rows] == ["COMPLETED", "COMPLETED"]
    rates = [row["hyperparameters"]["learning_rate"] for row in rows]
    assert rates[0] != rates[1] and all(3e-4 <= r <= 3e-3 for r in rates)
    for row in rows:  # the score is the robust accuracy, not the clean one
        assert row["score"] == row["val_adv_accuracy"]
        assert 0.0 <= row["val_adv_accuracy"] <= row["val_accuracy"] <= 1.0
        assert row["tuner_id"] == "tuner0"
    best_row = max(rows, key=lambda row: row["val_adv_accuracy"])
    best_trial = tuner.oracle.get_best_trials(1)[0]
    assert best_trial.trial_id == best_row["trial"]

    # The best model, saved as .keras and loaded back, scores what the trial recorded.
    path = str(tmp_path / "best_model.keras")
    tuner.get_best_models(1)[0].save(path)
    model = keras.saving.load_model(path)
    assert int(model.optimizer.iterations.numpy()) == 8  # 512 images / 64: trained
    # The trial validated after 8 training steps had drawn 8 seeds: replay those draws.
    model._seed_generator.state.assign([0, 8])
    scores = model.evaluate(val, return_dict=True, verbose=0)
    assert scores["accuracy"] == pytest.approx(best_row["val_accuracy"], abs=1e-6)
    assert scores["adv_accuracy"] == pytest.approx(best_row["val_adv_accuracy"], abs=1e-6)
    assert scores["accuracy"] > 0.15  # above chance (0.1) after one epoch on 512 digits
    print(tuning.format_table(rows))


@pytest.mark.slow
def test_bayesian_search_on_a_combined_score_and_hyperband_each_run_a_trial(
        tmp_path, datasets):
    train, val = datasets
    hypermodel = RobustHyperModel(**PLAIN, score_weight=0.25, **SMALL)
    tuner = tuning.build_tuner(hypermodel, "bayesian", "val_robust_score", max_trials=1,
                               directory=str(tmp_path / "bayes"), seed=0)
    assert isinstance(tuner, kt.BayesianOptimization)
    tuner.search(train, validation_data=val, epochs=1, verbose=0)
    (row,) = tuning.results(tuner)
    assert row["status"] == "COMPLETED"
    expected = 0.25 * row["val_accuracy"] + 0.75 * row["val_adv_accuracy"]
    assert row["val_robust_score"] == pytest.approx(expected, abs=1e-9)
    assert row["score"] == pytest.approx(expected, abs=1e-9)

    band = tuning.build_tuner(RobustHyperModel(**PLAIN, **SMALL), "hyperband", max_trials=1,
                              max_epochs=2, factor=2, directory=str(tmp_path / "band"))
    assert isinstance(band, kt.Hyperband)
    band.search(train, validation_data=val, epochs=1, verbose=0)
    (row,) = tuning.results(band)
    assert row["status"] == "COMPLETED" and 0.0 <= row["val_adv_accuracy"] <= 1.0
    assert row["schedule"]["tuner/epochs"] >= 1  # Hyperband's own bookkeeping, kept apart
    assert "tuner/epochs" not in row["hyperparameters"]


# -- tfrobust tune -----------------------------------------------------------------------
CONFIG = """
limit = 256
val_limit = 64
epochs = 1
num_steps = 2
eval_num_steps = 2
batch_size = 64
max_trials = 2
seed = 0

[fixed]
method = "pgd-at"
adr = false
head = "dense"

[search]
learning_rate = [0.0003, 0.003]
"""


def _snapshot(directory):
    """{path: (mtime_ns, size)} of every file under `directory`."""
    files = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            files[os.path.relpath(path, directory)] = (os.stat(path).st_mtime_ns,
                                                       os.path.getsize(path))
    return files


@pytest.mark.slow
def test_tune_command_writes_results_and_best_model_and_resumes(tmp_path, capsys, monkeypatch):
    config = tmp_path / "tune.toml"
    config.write_text(CONFIG)
    out = tmp_path / "search"
    command = ["tune", "--config", str(config), "--output", str(out)]

    # Interrupt the search as its second trial starts (as Ctrl-C or a kill would).
    fit = RobustHyperModel.fit
    calls = []

    def interrupted_fit(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(RobustHyperModel, "fit", interrupted_fit)
    with pytest.raises(KeyboardInterrupt):
        main(command)
    monkeypatch.undo()
    capsys.readouterr()
    interrupted = json.loads((out / "search" / "trial_1" / "trial.json").read_text())
    assert interrupted["status"] == "RUNNING"
    first = _snapshot(out / "search" / "trial_0")

    # The same command resumes: trial 0 is kept, trial 1 runs again with its values.
    assert main(command) == 0
    printed = capsys.readouterr().out
    assert "resuming: 1 trials finished" in printed and printed.count("Running Trial") == 1
    assert _snapshot(out / "search" / "trial_0") == first
    assert sorted(os.listdir(out)) == ["best_model.keras", "results.json", "search",
                                       "tune_config.json"]
    results = json.loads((out / "results.json").read_text())
    rows = results["trials"]
    assert [r["status"] for r in rows] == ["COMPLETED", "COMPLETED"]
    assert rows[1]["hyperparameters"] == interrupted["hyperparameters"]["values"]
    assert rows[0]["hyperparameters"] != rows[1]["hyperparameters"]
    assert results["objective"] == {"name": "val_adv_accuracy", "direction": "max"}
    # The best trial has the highest score (two trials may tie on 64 validation images).
    (best,) = [r for r in rows if r["trial"] == results["best"]["trial"]]
    assert best["val_adv_accuracy"] == max(r["val_adv_accuracy"] for r in rows)
    assert results["tfrobust_version"]
    for row in rows:
        assert row["score"] == row["val_adv_accuracy"]
        assert f"{row['val_adv_accuracy']:.4g}" in printed  # the printed table
    # Numbered as keras-tuner numbers them ("Running Trial #1" is trial "0"), the epoch said.
    assert [r["number"] for r in rows] == [1, 2]
    table = printed.split("(each trial's metrics at its best epoch by val_adv_accuracy")[0]
    assert [line.split()[0] for line in table.strip().splitlines()[-2:]] == ["#1", "#2"]
    assert "best epoch" in table.strip().splitlines()[-3]
    assert f"Best trial #{best['number']}: val_adv_accuracy {best['score']:.4f} at epoch " \
        f"{best['best_step'] + 1} ->" in printed
    model = keras.saving.load_model(str(out / "best_model.keras"))
    x, y = data.load_arrays("mnist-sample", "test", limit=64)
    accuracy = np.mean(np.argmax(model.predict(x, verbose=0), -1) == y)
    assert accuracy == pytest.approx(best["val_accuracy"], abs=1e-6)

    # Once more: the search is finished, nothing trains, nothing changes.
    trials = _snapshot(out / "search")
    assert main(command) == 0
    printed = capsys.readouterr().out
    assert "resuming: 2 trials finished" in printed and "Running Trial" not in printed
    assert {k: v for k, v in _snapshot(out / "search").items() if "trial_" in k} == {
        k: v for k, v in trials.items() if "trial_" in k}
    assert json.loads((out / "results.json").read_text())["trials"] == rows

    # More trials: only the new one trains.
    assert main([*command, "--max-trials", "3"]) == 0
    assert capsys.readouterr().out.count("Running Trial") == 1
    assert _snapshot(out / "search" / "trial_0") == first
    assert [r["trial"] for r in json.loads((out / "results.json").read_text())["trials"]] == [
        "0", "1", "2"]

    # A different search in the same directory is refused, not silently mixed in.
    assert main([*command, "--tuner", "bayesian"]) == 1
    assert "tuner: 'random' -> 'bayesian'" in capsys.readouterr().err
    assert main([*command, "--objective", "val_accuracy"]) == 1
    assert "val_adv_accuracy" in capsys.readouterr().err


@pytest.mark.parametrize("text,match", [
    ("epochs = 1\nlearning_rat = 0.1\n", r"Received unknown keys: \['learning_rat'\]"),
    ("[search]\nmargins = [0.1, 0.2]\n", r"Expected \[search\] keys among .*\['margins'\]"),
    ("[fixed]\nhead = 'dense'\nbogus = 1\n", r"Expected \[fixed\] keys among .*\['bogus'\]"),
    ("search_defaults = false\n", "Expected at least one hyperparameter to search"),
    ("objective = 'val_acc'\n", "Received: objective='val_acc'"),
    ("tuner = 'grid'\n", "tuner='grid'"),
    ("search = 3\n", r"Expected \[search\] to be a table"),
    ("num_steps = -2\n", "num_steps=-2"),
])
def test_tune_command_refuses_bad_configs_before_writing_anything(tmp_path, capsys, text,
                                                                  match):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    out = tmp_path / "never"
    assert main(["tune", "--config", str(config), "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert re.search(match, err), err
    assert not out.exists()


def test_the_documented_example_config_is_a_valid_search(tmp_path):
    readme = open(os.path.join(HERE, os.pardir, "docs", "tuning.md")).read()
    block = readme.split("```toml\n# tune.toml\n", 1)[1].split("```", 1)[0]
    config = tmp_path / "tune.toml"
    config.write_text(block)
    args = argparse.Namespace(config=str(config), tuner=None, max_trials=None, objective=None,
                              output=str(tmp_path / "out"), overwrite=None)
    options = tune.resolve_options(args)
    hypermodel = tune.build_hypermodel(options, data.info(options["data"]))
    searched = [spec.entry.name for spec in hypermodel.specs if spec.searched]
    assert searched == ["method", "trades_beta", "adr", "adr_lc", "adr_gc", "adr_ls", "adr_gs",
                        "adr_ce", "scale", "margin", "learning_rate"]
    assert tuning.check_objective(options["objective"], hypermodel).direction == "max"


def test_tune_command_needs_an_output_directory(capsys):
    assert main(["tune"]) == 1
    assert "--output" in capsys.readouterr().err


# -- distributed search ------------------------------------------------------------------
def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_distributed_search_spreads_trials_over_two_workers(tmp_path):
    script = os.path.join(HERE, "scripts", "distributed_tune.py")
    env = dict(os.environ, KERASTUNER_ORACLE_IP="127.0.0.1",
               KERASTUNER_ORACLE_PORT=str(_free_port()), TF_CPP_MIN_LOG_LEVEL="2")
    logs = {}
    processes = {}
    try:
        for tuner_id in ("chief", "tuner0", "tuner1"):
            logs[tuner_id] = open(tmp_path / f"{tuner_id}.log", "w")
            processes[tuner_id] = subprocess.Popen(
                [sys.executable, script, str(tmp_path)], env=dict(env,
                                                                  KERASTUNER_TUNER_ID=tuner_id),
                stdout=logs[tuner_id], stderr=subprocess.STDOUT)
        for tuner_id in ("tuner0", "tuner1"):
            code = processes[tuner_id].wait(timeout=180)
            assert code == 0, (tmp_path / f"{tuner_id}.log").read_text()[-3000:]
        # The chief polls every 20 s for the workers to be gone, then returns.
        assert processes["chief"].wait(timeout=60) == 0, \
            (tmp_path / "chief.log").read_text()[-3000:]
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
        for handle in logs.values():
            handle.close()

    ran = {w: (tmp_path / f"ran-{w}.txt").read_text().split() for w in ("tuner0", "tuner1")}
    assert ran["tuner0"] and ran["tuner1"], ran          # both workers ran trials
    assert sorted(ran["tuner0"] + ran["tuner1"]) == ["0", "1", "2", "3"]  # each trial once
    rows = json.loads((tmp_path / "results.json").read_text())  # written by the chief
    assert [row["status"] for row in rows] == ["COMPLETED"] * 4
    assert {row["trial"]: row["tuner_id"] for row in rows} == {
        trial: worker for worker, trials in ran.items() for trial in trials}
    assert len({row["hyperparameters"]["learning_rate"] for row in rows}) == 4
    assert all(0.0 <= row["val_adv_accuracy"] <= 1.0 for row in rows)
    # The oracle's own records, as the chief saved them.
    for row in rows:
        trial = json.loads((tmp_path / "search" / f"trial_{row['trial']}" / "trial.json")
                           .read_text())
        assert trial["status"] == "COMPLETED" and trial["score"] == row["val_adv_accuracy"]
