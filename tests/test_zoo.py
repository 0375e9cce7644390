"""The pretrained zoo: shipped in the package, loaded offline, and as good as its card says."""

import importlib.util
import json
import math
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import tfrobust
from tfrobust.cli.main import main
from tfrobust.evaluation import EvaluationReport
from tfrobust.evaluation.inputs import resolve_model
from tfrobust.models import zoo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRIES = tfrobust.models.pretrained()
NAMES = [entry.name for entry in ENTRIES]
# The re-evaluation: the first 100 test images, attacked by PGD-20 (the evaluation attack
# the models were validated with, and the card's PGD-20 column): cheap, and weaker than the
# card's AutoAttack, so its accuracy lies between the card's AutoAttack and clean figures.
LIMIT = 100


def test_the_zoo_lists_its_models_with_their_files_and_provenance():
    assert NAMES == ["mnist-pgd-at", "mnist-pgd-at-he", "cifar10-pgd-at", "cifar10-pgd-at-he"]
    total = 0
    for entry in ENTRIES:
        assert os.path.getsize(entry.model_file) == entry.size_bytes
        total += entry.size_bytes
        card = entry.card
        assert card["name"] == f"tfrobust {entry.name}" and card["dataset"] == entry.dataset
        assert card["autoattack_acc"] == f"{100 * entry.report.robust_accuracy:.2f}"
        # Its commands are the experiment's, for the seed it is.
        assert entry.commands[0] == (
            f"python -m tfrobust train --config experiments/configs/{entry.experiment}.toml "
            f"--seed {entry.seed} --output experiments/runs/{entry.experiment}-seed{entry.seed}")
        assert entry.commands[1].startswith("python -m tfrobust evaluate ")
        assert entry.name in str(entry) and f"{card['clean_acc']}%" in str(entry)
    # "A few MB in all" (8.7 MB): without optimizer state an MNIST small_cnn is 1.3 MB, a
    # CIFAR-10 preact_resnet18 at base width 16 3.05 MB (701,018 float32 parameters and its
    # statistics).
    assert total < 1e7


def test_the_zoo_is_what_the_committed_results_choose():
    result = subprocess.run([sys.executable, "experiments/zoo.py", "--check"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _zoo_script():
    spec = importlib.util.spec_from_file_location("experiments_zoo",
                                                  os.path.join(ROOT, "experiments", "zoo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_zoo_rebuilds_from_its_own_models_when_the_runs_are_gone(tmp_path, monkeypatch):
    # Models are not committed: an unchanged entry is rebuilt from the zoo's own copy, byte
    # for byte, so that adding an entry does not need every older run's model.
    script = _zoo_script()
    script.build(str(tmp_path / "runs"), str(tmp_path / "zoo"))
    shipped = sorted(os.path.relpath(os.path.join(folder, file), zoo.ZOO_DIR)
                     for folder, _, files in os.walk(zoo.ZOO_DIR) for file in files)
    rebuilt = sorted(os.path.relpath(os.path.join(folder, file), tmp_path / "zoo")
                     for folder, _, files in os.walk(tmp_path / "zoo") for file in files)
    assert rebuilt == shipped and len(shipped) == 1 + 4 * len(NAMES)
    for file in shipped:
        with open(os.path.join(zoo.ZOO_DIR, file), "rb") as a, \
                open(tmp_path / "zoo" / file, "rb") as b:
            assert a.read() == b.read(), file
    # Another seed chosen, whose run is not there: refused, naming it, and nothing written.
    other = dict(script.choose(script._results("mnist_pgd_at")), seed=7)
    monkeypatch.setattr(script, "choose", lambda results: other)
    with pytest.raises(SystemExit, match=r"mnist-pgd-at is mnist_pgd_at seed 7, whose model is "
                                         r"neither in experiments/runs/mnist_pgd_at-seed7 nor "
                                         r"shipped in the zoo: pass --runs"):
        script.build(os.path.join(ROOT, "experiments", "runs"), str(tmp_path / "other"))
    assert not os.listdir(tmp_path / "other")


@pytest.mark.parametrize("name", NAMES)
def test_a_zoo_model_is_the_one_its_report_evaluated(name):
    model = tfrobust.models.pretrained(name)
    entry = zoo.entry(name)
    assert isinstance(model, tfrobust.models.RobustModel)
    assert resolve_model(model)[1]["weights_sha256"] == entry.report.model["weights_sha256"]


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_a_zoo_model_re_evaluated_agrees_with_its_card(name, tmp_path):
    entry = zoo.entry(name)
    shipped = entry.report
    out = tmp_path / "report"
    epsilon = str(shipped.threat_model["epsilon"])
    assert main(["evaluate", f"pretrained:{name}", "--report", str(out), "--limit", str(LIMIT),
                 "--attacks", "pgd", "--sweep-attacks", "pgd", "--epsilons", epsilon,
                 "--checks", "none", "--quiet"]) == 0
    report = EvaluationReport.load(out)
    # The bundled test images are the first of the test split the card's report used
    # (MNIST_SAMPLE.md, CIFAR10_SAMPLE.md): the clean verdicts agree image by image.
    assert report.data["name"] == entry.data and report.data["num_examples"] == LIMIT
    assert report.model["weights_sha256"] == shipped.model["weights_sha256"]
    misclassified = [b == "misclassified" for b in shipped.broken_by[:LIMIT]]
    assert [b == "misclassified" for b in report.broken_by] == misclassified
    # PGD-20 on 100 images against PGD-20 on all 10,000, within three binomial standard errors.
    p = entry.test_accuracy["pgd20"]
    assert abs(report.robust_accuracy - p) <= 3 * math.sqrt(p * (1 - p) / LIMIT)
    # And at least the card's AutoAttack accuracy on these 100 images: PGD-20 is weaker.
    autoattack = np.mean([b == "robust" for b in shipped.broken_by[:LIMIT]])
    assert report.robust_accuracy >= autoattack - 1 / LIMIT
    card = json.loads((out / "model_card.json").read_text())
    assert (card["architecture"], card["eps"]) == (entry.card["architecture"],
                                                   entry.card["eps"])


def test_a_zoo_name_not_in_the_zoo_is_refused_with_the_names(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"Expected name to be one of \['cifar10-pgd-at', "
                                         r"'cifar10-pgd-at-he', 'mnist-pgd-at', "
                                         r"'mnist-pgd-at-he'\]. "
                                         r"Received: name='mnist'"):
        tfrobust.models.pretrained("mnist")
    assert main(["evaluate", "pretrained:nope", "--report", str(tmp_path / "r")]) == 1
    assert ("Expected MODEL pretrained:NAME with NAME one of ['cifar10-pgd-at', "
            "'cifar10-pgd-at-he', 'mnist-pgd-at', 'mnist-pgd-at-he']. "
            "Received: MODEL 'pretrained:nope'") in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_a_zoo_model_exports_for_serving_without_allow_untrained(tmp_path):
    import tensorflow as tf

    assert main(["export", "pretrained:mnist-pgd-at", str(tmp_path / "serving")]) == 0
    served = tf.saved_model.load(str(tmp_path / "serving" / "1"))
    x = np.asarray(tfrobust.data.load_arrays("mnist-sample", "test", limit=8)[0], np.float32)
    model = tfrobust.models.pretrained("mnist-pgd-at")
    logits = served.signatures["serving_default"](images=tf.constant(x))
    np.testing.assert_allclose(logits["logits"].numpy(), model.predict(x, verbose=0),
                               atol=1e-4)


@pytest.mark.slow
def test_the_zoo_ships_in_the_wheel_and_loads_from_a_fresh_install(tmp_path):
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", ROOT, "--no-deps", "-q",
                            "-w", str(tmp_path / "wheel")], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "wheel").iterdir()
    names = zipfile.ZipFile(wheel).namelist()
    for entry in ENTRIES:
        for file in ("model.keras", "model_card.json", "report.json"):
            assert f"tfrobust/models/zoo_data/{entry.name}/{file}" in names
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                              "--no-index", "--target", str(site), str(wheel)],
                             capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    # A fresh interpreter, away from the repository, with the installed copy first on its path.
    program = (
        "import numpy as np, tfrobust\n"
        "from tfrobust.models import zoo\n"
        f"assert zoo.__file__.startswith({str(site)!r}), zoo.__file__\n"
        "model = tfrobust.models.pretrained('mnist-pgd-at-he')\n"
        "x, y = tfrobust.data.load_arrays('mnist-sample', 'test', limit=200)\n"
        "print(float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y)))\n")
    env = dict(os.environ, PYTHONPATH=str(site), TF_CPP_MIN_LOG_LEVEL="3")
    loaded = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    shipped = zoo.entry("mnist-pgd-at-he").report
    # The first 200 test images: the card's verdicts say how many it classifies correctly.
    expected = np.mean([b != "misclassified" for b in shipped.broken_by[:200]])
    assert float(loaded.stdout.split()[-1]) == pytest.approx(expected)
