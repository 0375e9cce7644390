"""`tfrobust evaluate`: a saved model in, report.json and report.png out."""

import json
import os

import keras
import pytest
import tensorflow as tf

from tfrobust import attacks, models
from tfrobust.cli.main import main
from tfrobust.evaluation import EvaluationReport


@pytest.fixture(scope="module")
def saved_model(mnist_sample, tmp_path_factory):
    """A small_cnn trained one epoch on 512 digits, saved as a `tfrobust train` run would be."""
    x_train, y_train, _, _ = mnist_sample
    keras.utils.set_random_seed(0)
    model = models.RobustModel(models.small_cnn(input_shape=(28, 28, 1)),
                               keras.layers.Dense(10), objective="standard",
                               eval_attack=attacks.PGD(epsilon=0.1, num_steps=5))
    model.compile(optimizer="adam")
    model.fit(x_train[:512], y_train[:512], batch_size=128, epochs=1, verbose=0)
    run = tmp_path_factory.mktemp("run")
    model.save(run / "model.keras")
    (run / "config.json").write_text(json.dumps({"options": {"data": "mnist-sample"}}))
    return run / "model.keras"


QUICK = ["--limit", "40", "--attacks", "apgd-ce,square", "--sweep-attacks", "pgd",
         "--epsilons", "0.05,0.1",
         "--checks", "epsilon_zero,monotone_in_epsilon,deterministic,valid_examples",
         "--quiet"]


def test_evaluate_writes_report_and_plot(saved_model, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["evaluate", str(saved_model), "--report", str(out), *QUICK])
    printed = capsys.readouterr().out
    assert code == 0
    report = EvaluationReport.load(out)
    # Data from the config.json beside the model; threat model from its evaluation attack.
    assert report.data["name"] == "mnist-sample" and report.data["split"] == "test"
    assert report.data["num_examples"] == 40
    assert report.threat_model == {"norm": "linf", "epsilon": 0.1, "clip_min": 0.0,
                                   "clip_max": 1.0}
    assert [a["name"] for a in report.attacks] == ["apgd-ce", "square-5000"]
    # --epsilons, with 0, epsilon and the large epsilon (0.5 in [0, 1]) always added.
    assert report.sweep["epsilons"] == [0.0, 0.05, 0.1, 0.5]
    assert report.model["file"] == str(saved_model.resolve())
    assert [c.name for c in report.checks] == ["epsilon_zero", "monotone_in_epsilon",
                                               "deterministic", "valid_examples"]
    assert f"clean accuracy   {100 * report.clean_accuracy:6.2f}%" in printed
    assert f"robust accuracy  {100 * report.robust_accuracy:6.2f}%" in printed
    image = tf.io.decode_png(tf.io.read_file(str(out / "report.png"))).numpy()
    assert image.shape[-1] == 4 and image.shape[0] > 100
    card = json.loads((out / "model_card.json").read_text())
    assert card["dataset"] == "mnist-sample" and card["n_examples"] == 40
    assert card["additional_data"] is False  # the config.json beside the model
    assert "model_card.json" in printed

    # The finished units are cached: the same command again (with --overwrite) reuses them.
    code = main(["evaluate", str(saved_model), "--report", str(out), "--overwrite", *QUICK])
    printed = capsys.readouterr().out
    assert code == 0 and "resuming" in printed
    again = EvaluationReport.load(out)
    assert again.units["computed"] == 0 and again.units["reused"] == report.units["computed"]
    assert again.robust_accuracy == report.robust_accuracy


def test_evaluate_refuses_to_overwrite_and_names_bad_input(saved_model, tmp_path, capsys):
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.json").write_text("{}")
    assert main(["evaluate", str(saved_model), "--report", str(out), *QUICK]) == 1
    assert "already holds report.json" in capsys.readouterr().err
    assert (out / "report.json").read_text() == "{}"

    assert main(["evaluate", str(tmp_path / "nope.keras"), "--report", str(tmp_path / "r"),
                 *QUICK]) == 1
    assert "nope.keras" in capsys.readouterr().err

    assert main(["evaluate", str(saved_model), "--report", str(tmp_path / "r"),
                 "--attacks", "pgdd", "--quiet"]) == 1
    assert "attack='pgdd'" in capsys.readouterr().err

    for epsilons, message in (("0.1,a", "--epsilons '0.1,a'"), ("-0.1", "epsilons=-0.1")):
        assert main(["evaluate", str(saved_model), "--report", str(tmp_path / "r"),
                     "--epsilons", epsilons, "--quiet"]) == 1
        assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_strict_exit_status_follows_the_checks(saved_model, tmp_path):
    """`--strict` exits 3 when a check fails: here a model saved with a softmax on top."""
    probabilities = keras.Sequential([keras.Input((28, 28, 1)),
                                      keras.saving.load_model(saved_model),
                                      keras.layers.Softmax()])
    probabilities.save(tmp_path / "softmax.keras")
    # The check reads the clean outputs: the cheapest attack and sweep do.
    quick = ["--limit", "40", "--attacks", "fgsm", "--sweep-attacks", "fgsm", "--epsilons", "0.1",
             "--checks", "outputs_are_logits", "--quiet", "--strict", "--epsilon", "0.1"]
    assert main(["evaluate", str(tmp_path / "softmax.keras"), "--data", "mnist-sample",
                 "--report", str(tmp_path / "a"), *quick]) == 3
    assert EvaluationReport.load(tmp_path / "a").check("outputs_are_logits").passed is False
    assert main(["evaluate", str(saved_model), "--report", str(tmp_path / "b"), *quick]) == 0
    assert EvaluationReport.load(tmp_path / "b").check("outputs_are_logits").passed is True


def test_threat_model_split_and_attack_options_from_the_command_line(
        saved_model, tmp_path, capsys):
    out = tmp_path / "l2"
    code = main(["evaluate", str(saved_model), "--report", str(out), "--norm", "l2",
                 "--epsilon", "1.5", "--split", "train", "--limit", "40", "--batch-size", "4",
                 "--seed", "3", "--tolerance", "0.05", "--attacks", "apgd-ce",
                 "--sweep-attacks", "pgd", "--epsilons", "0.5", "--checks", "monotone_in_epsilon",
                 "--quiet"])
    assert code == 0, capsys.readouterr().err
    report = EvaluationReport.load(out)
    assert report.threat_model["norm"] == "l2" and report.threat_model["epsilon"] == 1.5
    assert report.data["split"] == "train" and report.data["num_examples"] == 40
    assert report.attacks[0]["config"]["config"]["seed"] == 3
    assert report.check("monotone_in_epsilon").numbers["tolerance"] == 0.05
    # Units are batches of --batch-size correctly classified examples, per attack and budget:
    # the ensemble's one member, and the sweep at 0, 0.5, 1.5 and the large L2 epsilon.
    assert report.sweep["epsilons"][:3] == [0.0, 0.5, 1.5] and len(report.sweep["epsilons"]) == 4
    batches = -(-round(40 * report.clean_accuracy) // 4)
    assert batches >= 2 and report.units["computed"] == batches * (1 + 4)

    # --norm l2 without --epsilon: the model's L-inf radius is not taken as an L2 one.
    assert main(["evaluate", str(saved_model), "--report", str(tmp_path / "bad"), "--norm",
                 "l2", "--quiet"]) == 1
    assert "Expected epsilon with norm='l2'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_a_second_writer_is_refused_and_named(saved_model, tmp_path, capsys):
    """While one process holds the report directory, another evaluate into it is refused."""
    import subprocess
    import sys

    from tfrobust.utils import locks

    out = tmp_path / "report"
    out.mkdir()
    cheap = ["--limit", "20", "--attacks", "apgd-ce", "--sweep-attacks", "pgd",
             "--epsilons", "0.1", "--checks", "none", "--quiet"]
    # The holder loads the lock's module alone (no TensorFlow import: it starts at once).
    holder = subprocess.Popen(
        [sys.executable, "-c", "import importlib.util, sys, time\n"
         "spec = importlib.util.spec_from_file_location('locks', sys.argv[2])\n"
         "locks = importlib.util.module_from_spec(spec)\n"
         "spec.loader.exec_module(locks)\n"
         "with locks.DirectoryLock(sys.argv[1], 'the first run'):\n"
         "    print('locked', flush=True)\n"
         "    time.sleep(120)\n", str(out), locks.__file__],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["evaluate", str(saved_model), "--report", str(out), *cheap]) == 1
        err = capsys.readouterr().err
        assert "locked by" in err and f'"pid": {holder.pid}' in err and "the first run" in err
        assert os.listdir(out) == [".lock"]  # nothing of the refused run, the holder's lock kept
    finally:
        holder.kill()
        holder.wait()
    # The lock dies with its holder: the same command now runs (with its progress lines:
    # a log, not a terminal, gets one per attack, and the plan ends complete).
    capsys.readouterr()
    assert main(["evaluate", str(saved_model), "--report", str(out),
                 *[a for a in cheap if a != "--quiet"]]) == 0
    assert (out / "report.json").exists()
    lines = [line for line in capsys.readouterr().out.splitlines() if " examples (" in line]
    assert [line.split()[0] for line in lines] == ["apgd-ce", "sweep"]
    done, planned = lines[-1].split(" examples")[0].split()[-3::2]
    assert done == planned and "(100%)" in lines[-1]


def test_two_shards_in_two_processes_give_the_unsharded_report(saved_model, tmp_path):
    """`--shard 1/2` and `--shard 2/2` at once, then the same command without --shard:
    nothing left to compute, and the report of a run that was never sharded."""
    import subprocess
    import sys

    # Checks that attack through the runner (their units are sharded too) and one that does not.
    checks = "large_epsilon,single_step,deterministic"
    options = ["--limit", "24", "--batch-size", "8", "--attacks", "apgd-ce,fgsm",
               "--sweep-attacks", "pgd", "--epsilons", "0.1", "--checks", checks, "--quiet"]
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    assert main(["evaluate", str(saved_model), "--report", str(whole), *options]) == 0
    shards = [subprocess.Popen([sys.executable, "-m", "tfrobust", "evaluate", str(saved_model),
                                "--report", str(sharded), "--shard", f"{k}/2", *options],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for k in (1, 2)]
    outputs = [shard.communicate(timeout=600) for shard in shards]
    assert [shard.returncode for shard in shards] == [0, 0], outputs
    assert all("without --shard to write the report" in out for out, _ in outputs)
    assert not (sharded / "report.json").exists()

    assert main(["evaluate", str(saved_model), "--report", str(sharded), *options]) == 0
    expected, report = EvaluationReport.load(whole), EvaluationReport.load(sharded)
    assert report.units == {"computed": 0, "reused": expected.units["computed"]}
    assert report.units["reused"] > 4  # several batches of several attacks, split in two
    for key in ("clean_accuracy", "robust_accuracy", "broken_by", "sweep"):
        assert getattr(report, key) == getattr(expected, key)
    assert [c.numbers for c in report.checks] == [c.numbers for c in expected.checks]
    assert [c.name for c in report.checks] == checks.split(",")

    for bad in ("3/2", "0/2", "two"):
        assert main(["evaluate", str(saved_model), "--report", str(tmp_path / "bad"),
                     "--shard", bad, "--quiet"]) == 1
    assert not (tmp_path / "bad").exists()


def test_precision_is_recorded_in_the_report_and_card(saved_model, tmp_path):
    out = tmp_path / "report"
    assert main(["evaluate", str(saved_model), "--report", str(out), "--limit", "20",
                 "--attacks", "apgd-ce", "--sweep-attacks", "pgd", "--epsilons", "0.1",
                 "--checks", "none", "--precision", "mixed_bfloat16", "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    card = json.loads((out / "model_card.json").read_text())
    assert report["precision"] == "mixed_bfloat16"
    assert card["precision"] == "mixed_bfloat16" and card["autoattack_acc"] is None
    with pytest.raises(SystemExit):
        main(["evaluate", str(saved_model), "--report", str(tmp_path / "r"),
              "--precision", "float16"])
