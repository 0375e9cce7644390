"""experiments/: the README's tables are the committed results, and each result says how it was
made."""

import glob
import importlib.util
import json
import os
import sys

import pytest

from tfrobust.objectives.regularizers import parse_weights as parse_adr_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = os.path.join(ROOT, "experiments")
if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _module(name):
    spec = importlib.util.spec_from_file_location(f"experiments_{name}",
                                                  os.path.join(EXPERIMENTS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SUPERSEDED = os.path.join(EXPERIMENTS, "superseded", "one-epoch")


def _results(directory):
    return sorted(p for p in glob.glob(os.path.join(directory, "results", "*", "seed*.json"))
                  if not p.endswith(".report.json"))


# (result, its config directory, report images, PGD-20 images at least): the 5-epoch results,
# and the one-epoch results they superseded (kept with their own configs).
RESULTS = ([(p, EXPERIMENTS, 500, 10000) for p in _results(EXPERIMENTS)]
           + [(p, SUPERSEDED, 100, 1000) for p in _results(SUPERSEDED)])


def test_readme_tables_are_the_committed_results():
    tables = _module("tables")
    with open(tables.README) as handle:
        text = handle.read()
    for name in ("seeds", "ablation", "findings"):
        assert f"<!-- table:{name} -->" in text
    assert tables.render_readme(text) == text, "run python experiments/tables.py --write"


@pytest.mark.parametrize("path,directory,report_images,pgd_images", RESULTS,
                         ids=[os.path.relpath(r[0], EXPERIMENTS) for r in RESULTS])
def test_every_result_matches_its_config_and_report(path, directory, report_images, pgd_images):
    with open(path) as handle:
        record = json.load(handle)
    name = os.path.basename(os.path.dirname(path))
    with open(os.path.join(directory, "configs", f"{name}.toml"), "rb") as handle:
        config = tomllib.load(handle)
    # The run used exactly the committed config (flags only add the seed and output).
    for key, value in config.items():
        if key == "adr_weights":  # recorded as resolved: every term, unnamed at the reference
            value = parse_adr_weights(value)
        if key == "num_classes" and key not in record["options"]:
            # Runs made before the option existed took the class count from the largest
            # label of full MNIST's training set, 10, which the config now states.
            assert value == 10
            continue
        assert record["options"][key] == value, key
    assert record["options"]["seed"] == record["seed"]
    assert len(record["provenance"]["git_commit"]) == 40
    assert record["provenance"]["tfrobust_version"]
    with open(path.replace(".json", ".report.json")) as handle:
        report = json.load(handle)
    evaluation = record["evaluation"]
    assert evaluation["autoattack"] == report["robust_accuracy"]
    assert evaluation["clean"] == report["clean_accuracy"]
    assert evaluation["examples"] == report["data"]["num_examples"] == report_images
    # AutoAttack's worst case never exceeds the clean accuracy or any single attack's.
    assert evaluation["autoattack"] <= min(evaluation["after_each_attack"].values()) + 1e-9
    assert evaluation["autoattack"] <= evaluation["clean"]
    assert record["pgd20"]["examples"] == config["eval_limit"] >= pgd_images
    assert 0.0 <= record["pgd20"]["pgd20"] <= record["pgd20"]["clean"] <= 1.0


def test_the_5_epoch_results_record_which_tensor_adr_read():
    for path, directory, _, _ in RESULTS:
        if directory != EXPERIMENTS:
            continue
        with open(path) as handle:
            options = json.load(handle)["options"]
        if options["adr"]:
            assert options["adr_layer"] in ("flatten", "features"), path
            assert options["initialization"] in ("keras", "reference"), path


def test_two_lanes_committing_at_once_both_land(tmp_path, monkeypatch):
    """`run.py --commit` from two lanes at the same moment: both results committed, no lock
    error."""
    import subprocess
    import threading

    run = _module("run")
    monkeypatch.setattr(run, "ROOT", str(tmp_path))
    monkeypatch.setattr(run, "RUNS", str(tmp_path / "runs"))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.check_call(["git", "init", "--quiet", str(tmp_path)])
    subprocess.check_call([*git, "commit", "--quiet", "--allow-empty", "-m", "start"], cwd=tmp_path)
    monkeypatch.setenv("GIT_AUTHOR_NAME", "t")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "t@t")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "t")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "t@t")
    results, errors = [], []
    for name in ("a", "b", "c", "d"):
        result = tmp_path / f"{name}.json"
        result.write_text(json.dumps({"pgd20": {"clean": 0.9, "pgd20": 0.8, "examples": 10},
                                      "evaluation": {"autoattack": 0.7, "examples": 5}}))
        (tmp_path / f"{name}.report.json").write_text("{}")
        results.append((name, str(result)))

    def lane(name, result):
        try:
            run._commit(name, 0, result)
        except Exception as error:  # noqa: BLE001 - the assertion below reports it
            errors.append(error)

    threads = [threading.Thread(target=lane, args=item) for item in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    log = subprocess.check_output(["git", "log", "--format=%s"], cwd=tmp_path, text=True)
    assert sorted(line.split(":")[1].strip() for line in log.splitlines()[:-1]) == [
        "a seed 0", "b seed 0", "c seed 0", "d seed 0"]
    assert subprocess.check_output(["git", "status", "--porcelain", "--", "*.json"],
                                   cwd=tmp_path, text=True) == ""
