"""experiments/: the README's tables are the committed results, and each result says how it was made."""

import glob
import importlib.util
import json
import os
import sys

import pytest

from tfrobust.cli.train import parse_adr_weights

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


RESULTS = sorted(p for p in glob.glob(os.path.join(EXPERIMENTS, "results", "*", "seed*.json"))
                 if not p.endswith(".report.json"))


def test_readme_tables_are_the_committed_results():
    tables = _module("tables")
    with open(tables.README) as handle:
        text = handle.read()
    assert "<!-- table:frameworks -->" in text and "<!-- table:seeds -->" in text
    assert tables.render_readme(text) == text, "run python experiments/tables.py --write"


@pytest.mark.parametrize("path", RESULTS, ids=[os.path.relpath(p, EXPERIMENTS) for p in RESULTS])
def test_every_result_matches_its_config_and_report(path):
    with open(path) as handle:
        record = json.load(handle)
    name = os.path.basename(os.path.dirname(path))
    with open(os.path.join(EXPERIMENTS, "configs", f"{name}.toml"), "rb") as handle:
        config = tomllib.load(handle)
    # The run used exactly the committed config (flags only add the seed and output).
    for key, value in config.items():
        if key == "adr_weights":  # recorded as resolved: every term, unnamed at the reference
            value = parse_adr_weights(value)
        assert record["options"][key] == value, key
    assert record["options"]["seed"] == record["seed"]
    assert len(record["provenance"]["git_commit"]) == 40
    assert record["provenance"]["tfrobust_version"]
    with open(path.replace(".json", ".report.json")) as handle:
        report = json.load(handle)
    evaluation = record["evaluation"]
    assert evaluation["autoattack"] == report["robust_accuracy"]
    assert evaluation["clean"] == report["clean_accuracy"]
    assert evaluation["examples"] == report["data"]["num_examples"] == 100
    # AutoAttack's worst case never exceeds the clean accuracy or any single attack's.
    assert evaluation["autoattack"] <= min(evaluation["after_each_attack"].values()) + 1e-9
    assert evaluation["autoattack"] <= evaluation["clean"]
    assert record["pgd20"]["examples"] == config["eval_limit"] >= 1000
    assert 0.0 <= record["pgd20"]["pgd20"] <= record["pgd20"]["clean"] <= 1.0
