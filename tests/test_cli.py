"""`tfrobust train` end to end on a small slice of the bundled sample."""

import json
import os

import keras
import numpy as np
import pytest

from tfrobust import data
from tfrobust.cli.main import main

SMALL = ["--limit", "256", "--epochs", "1", "--val-limit", "64", "--eval-limit", "128",
         "--num-steps", "2", "--eval-num-steps", "3", "--batch-size", "64"]


def test_train_writes_artefacts_that_agree_with_each_other(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", *SMALL, "--epsilon", "0.2", "--attack-bn", "training",
                 "--jit-compile", "false", "--output", out]) == 0
    assert sorted(os.listdir(out)) == ["config.json", "history.json", "model.keras"]

    config = json.load(open(os.path.join(out, "config.json")))
    assert config["model"]["attack_bn"] == "training"
    assert config["options"]["jit_compile"] is False
    assert config["options"]["epsilon"] == 0.2 and config["options"]["method"] == "pgd-at"
    assert config["options"]["data"] == "mnist-sample" and config["options"]["model"] == "small_cnn"
    assert config["data_info"]["num_classes"] == 10
    assert config["model"]["attack"]["config"]["num_steps"] == 2
    assert config["tfrobust_version"] and "tensorflow_version" in config

    history = json.load(open(os.path.join(out, "history.json")))
    assert len(history["epochs"]) == 1
    assert {"loss", "accuracy", "adv_accuracy", "val_accuracy", "val_adv_accuracy"} <= set(
        history["epochs"][0])
    # The saved model reproduces the reported clean test accuracy exactly.
    model = keras.saving.load_model(os.path.join(out, "model.keras"))
    x, y = data.load_arrays("mnist-sample", "test", limit=128)
    accuracy = np.mean(np.argmax(model.predict(x, verbose=0), -1) == y)
    assert accuracy == pytest.approx(history["test"]["accuracy"], abs=1e-6)
    printed = capsys.readouterr().out
    assert f"clean {history['test']['accuracy']:.4f}" in printed
    assert f"adversarial {history['test']['adv_accuracy']:.4f}" in printed


def test_config_file_is_read_and_flags_override_it(tmp_path):
    config_file = tmp_path / "run.toml"
    config_file.write_text('method = "standard"\nepsilon = 0.1\nepochs = 1\nseed = 3\n')
    out = str(tmp_path / "run")
    assert main(["train", *SMALL, "--config", str(config_file), "--epsilon", "0.15",
                 "--output", out]) == 0
    options = json.load(open(os.path.join(out, "config.json")))["options"]
    assert options["method"] == "standard" and options["seed"] == 3
    assert options["epsilon"] == 0.15  # the flag wins over the file


def test_bad_options_fail_with_a_message_and_write_nothing(tmp_path, capsys):
    bad_file = tmp_path / "bad.toml"
    bad_file.write_text("epsilon = 0.1\nlearning_rat = 0.1\n")
    out = tmp_path / "never"
    assert main(["train", "--config", str(bad_file), "--output", str(out)]) == 1
    assert "learning_rat" in capsys.readouterr().err
    assert main(["train", "--epsilon", "-1", "--output", str(out)]) == 1
    assert "epsilon=-1" in capsys.readouterr().err
    assert main(["train", "--data", "no-such-data", "--output", str(out)]) == 1
    assert "data='no-such-data'" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "missing.npz"), "--output", str(out)]) == 1
    assert "missing.npz" in capsys.readouterr().err
    # wide_resnet's shape, refused before anything trains.
    assert main(["train", "--model", "wide_resnet", "--depth", "11", "--output", str(out)]) == 1
    assert "depth=11" in capsys.readouterr().err
    assert main(["train", "--model", "wide_resnet", "--depth", "10", "--width", "0",
                 "--output", str(out)]) == 1
    assert "width=0" in capsys.readouterr().err
    assert not out.exists()


def test_an_earlier_run_is_not_overwritten_without_asking(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.keras").write_text("an earlier model")
    assert main(["train", *SMALL, "--output", str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "model.keras").read_text() == "an earlier model"


# bfloat16 (twice as slow as float32 on a CPU without AMX) where the method keeps state or
# steps along an input gradient of its own (FreeAT's carried perturbation, FastAT's FGSM);
# the head's logits are float32 under either policy, so TRADES' and ALP's losses are the
# same computation (TRADES under bfloat16: tests/test_objectives.py).
@pytest.mark.parametrize("method,key,value,precision", [
    ("trades", "beta", 3.0, "float32"), ("free-at", "replays", 3, "mixed_bfloat16"),
    ("alp", "beta", 0.25, "float32"), ("fast-at", "step_ratio", 1.0, "mixed_bfloat16")])
def test_every_method_trains_and_records_its_hyperparameters(tmp_path, method, key, value,
                                                             precision):
    out = str(tmp_path / method)
    flag = "--" + key.replace("_", "-")  # the objective's hyperparameter, not its default
    assert main(["train", *SMALL, "--method", method, "--precision", precision,
                 flag, str(value), "--output", out]) == 0
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["options"]["method"] == method
    assert config["model"]["objective"]["config"][key] == value
    assert config["options"]["precision"] == precision
    history = json.load(open(os.path.join(out, "history.json")))
    assert 0.0 <= history["test"]["adv_accuracy"] <= history["test"]["accuracy"] + 1e-9
    # The run's precision policy does not leak into the rest of the process.
    assert keras.mixed_precision.global_policy().name == "float32"


def test_hypersphere_head_takes_the_reference_defaults_of_the_method(tmp_path, capsys):
    out = str(tmp_path / "he")
    assert main(["train", *SMALL, "--method", "alp", "--head", "hypersphere", "--output",
                 out]) == 0
    config = json.load(open(os.path.join(out, "config.json")))
    head = config["model"]["head"]
    assert head["class_name"] == "HypersphereDense"
    assert (head["config"]["scale"], head["config"]["margin"]) == (20.0, 0.3)
    model = keras.saving.load_model(os.path.join(out, "model.keras"))
    x, _ = data.load_arrays("mnist-sample", "test", limit=16)
    logits = model.predict(x, verbose=0)
    assert np.abs(logits).max() <= 1.0 + 1e-5  # inference returns cosines
    assert main(["train", *SMALL, "--scale", "10", "--output", str(tmp_path / "x")]) == 1
    assert "--head hypersphere" in capsys.readouterr().err
    assert main(["train", *SMALL, "--margin", "0.1", "--output", str(tmp_path / "x")]) == 1
    assert "--head hypersphere" in capsys.readouterr().err
    # Given values replace the method's defaults.
    out = str(tmp_path / "he-given")
    assert main(["train", *SMALL, "--method", "alp", "--head", "hypersphere", "--scale", "12",
                 "--margin", "0.1", "--output", out]) == 0
    head = json.load(open(os.path.join(out, "config.json")))["model"]["head"]
    assert (head["config"]["scale"], head["config"]["margin"]) == (12.0, 0.1)


def test_adr_with_weights_and_a_layer(tmp_path, capsys):
    out = str(tmp_path / "adr")
    assert main(["train", *SMALL, "--adr", "--adr-weights", "gc=0.5,gs=0.25", "--adr-layer",
                 "conv4", "--output", out]) == 0
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["options"]["adr_weights"] == {"lc": 1.0, "gc": 0.5, "ls": 1.0, "gs": 0.25,
                                                "ce": 1.0}
    objective = config["model"]["objective"]["config"]
    assert objective["base"] == "pgd-at" and objective["layer"] == "conv4"
    weights = {r["class_name"]: r["config"]["weight"] for r in objective["regularizers"]}
    assert weights["GlobalCompactness"] == 0.5 and weights["GlobalSmoothness"] == 0.25
    history = json.load(open(os.path.join(out, "history.json")))
    assert "local_compactness" in history["epochs"][0]
    assert main(["train", *SMALL, "--adr", "--adr-weights", "xx=1", "--output",
                 str(tmp_path / "bad")]) == 1
    assert "adr_weights" in capsys.readouterr().err
    assert main(["train", *SMALL, "--adr", "--method", "alp", "--output",
                 str(tmp_path / "bad")]) == 1
    assert "method='alp'" in capsys.readouterr().err


def test_adr_layer_dropout_and_initialization_are_resolved_into_config_json(tmp_path, capsys):
    out = str(tmp_path / "adr")
    assert main(["train", *SMALL, "--adr", "--dropout", "0", "--initialization", "reference",
                 "--output", out]) == 0
    config = json.load(open(os.path.join(out, "config.json")))
    options = config["options"]
    # The tensor ADR read, resolved from the backbone's declaration, not left as None.
    assert options["adr_layer"] == "flatten"
    assert config["model"]["objective"]["config"]["layer"] == "flatten"
    assert (options["dropout"], options["initialization"]) == (0.0, "reference")
    layers = [layer["config"]["name"] for layer in config["model"]["backbone"]["config"]["layers"]]
    assert "dropout" not in layers and "flatten" in layers
    head = config["model"]["head"]["config"]["kernel_initializer"]
    assert head["class_name"] == "Zeros"  # the reference's zero last layer
    for flags, expected in ((["--dropout", "1.5"], "dropout=1.5"),
                            (["--model", "preact_resnet18", "--dropout", "0.2"], "no dropout"),
                            (["--model", "preact_resnet18", "--initialization", "keras"],
                             "initialization='keras'")):
        assert main(["train", *SMALL, *flags, "--output", str(tmp_path / "bad")]) == 1
        assert expected in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "bad")
