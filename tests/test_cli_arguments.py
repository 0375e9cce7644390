"""The command line's own behaviour, from the command line: suggestions for a mistyped option
in the subcommand's usage, no abbreviations, epsilon as a fraction and the hint for 8, and what
a model path that is not a .keras file gets told. Nothing here trains."""

import argparse
import subprocess
import sys

import pytest

from tfrobust.cli import arguments
from tfrobust.cli.main import main


def _fails(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_a_mistyped_option_gets_the_subcommands_usage_and_the_closest_option(capsys):
    err = _fails(["train", "--epsilom", "0.1"], capsys)
    assert err.startswith("usage: tfrobust train")
    assert "unrecognized arguments: --epsilom 0.1; --epsilom: did you mean --epsilon?" in err
    err = _fails(["evaluate", "m.keras", "--report", "r", "--limt", "5"], capsys)
    assert err.startswith("usage: tfrobust evaluate") and "did you mean --limit?" in err
    err = _fails(["--nonsense"], capsys)
    assert err.startswith("usage: tfrobust [-h]") and "did you mean" not in err


def test_abbreviations_are_not_taken(capsys):
    """`--epoch 1` was silently `--epochs 1`."""
    err = _fails(["train", "--epoch", "1"], capsys)
    assert "unrecognized arguments: --epoch 1; --epoch: did you mean --epochs?" in err


@pytest.mark.parametrize("text,value", [("0.3", 0.3), ("8/255", 8 / 255), ("0", 0.0),
                                        ("2/255", 2 / 255)])
def test_epsilon_is_a_number_or_a_fraction(text, value):
    assert arguments.epsilon(text) == value


@pytest.mark.parametrize("text", ["8/0", "8/2x", "1/2/3", ""])
def test_a_bad_epsilon_is_named(text):
    with pytest.raises(argparse.ArgumentTypeError, match=repr(text)):
        arguments.epsilon(text)


def test_epsilon_8_gets_the_8_over_255_hint_and_fractions_train(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--epsilon", "8", "--epochs", "1", "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert "Received: epsilon=8.0. Pixels are in [0, 1]: did you mean 8/255 = 0.0314?" in err
    assert not out.exists()
    err = _fails(["train", "--epsilon", "8/x", "--output", str(out)], capsys)
    assert "argument --epsilon: expected a number or a fraction such as 8/255, received '8/x'" \
        in err


def test_epsilons_take_fractions_on_the_command_line(tmp_path, capsys):
    from tfrobust.cli.evaluate import _epsilons

    assert _epsilons("2/255,8/255") == [2 / 255, 8 / 255]
    model = tmp_path / "m.keras"
    model.write_bytes(b"not a model")
    assert main(["evaluate", str(model), "--report", str(tmp_path / "r"),
                 "--epsilons", "0.1,x/255"]) == 1
    assert "Expected --epsilons to be comma-separated numbers or fractions. Received: " \
        "--epsilons '0.1,x/255'" in capsys.readouterr().err


def test_model_paths_that_are_not_keras_files_are_named(tmp_path, capsys):
    missing = tmp_path / "runs" / "mnist" / "model.keras"
    assert main(["evaluate", str(missing), "--report", str(tmp_path / "r")]) == 1
    assert f"Received: MODEL '{missing}', which does not exist (tfrobust train writes " \
        "OUTPUT/model.keras)" in capsys.readouterr().err
    saved = tmp_path / "export" / "1"
    saved.mkdir(parents=True)
    (saved / "saved_model.pb").write_bytes(b"")
    for command in (["evaluate", str(saved), "--report", str(tmp_path / "r")],
                    ["export", str(saved), str(tmp_path / "out")]):
        assert main(command) == 1
        assert "is a SavedModel directory (what tfrobust export writes for serving)" in \
            capsys.readouterr().err
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(b"")
    assert main(["evaluate", str(run), "--report", str(tmp_path / "r")]) == 1
    assert f"is a directory holding one: pass {run / 'model.keras'}" in capsys.readouterr().err
    assert not (tmp_path / "r").exists() and not (tmp_path / "out").exists()


def test_the_same_from_a_shell():
    """One of the above through `python -m tfrobust`, as a user types it."""
    result = subprocess.run([sys.executable, "-m", "tfrobust", "train", "--epsilom", "0.1"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "did you mean --epsilon?" in result.stderr
