"""The catalogue of bad inputs (docs/bad-inputs.md): each refused with a clear error,
nothing written and nothing changed.

Rows already asserted elsewhere are listed in the doc with their test and not
repeated here: 0-255 images, integer images, images without a channel axis,
labels above the class count, bad validation data (test_robust_model.py);
negative or too large L-inf epsilon, negative steps, unknown attack names
(test_pgd.py); unknown dataset names, missing data files, `batch_size=0` in
`tfrobust.data.load` (test_data.py); unknown objective names
(test_robust_model.py); unknown config keys, negative epsilon, unknown and
missing data, an output directory holding a run (test_cli.py).
"""

import json
import os
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfrobust import attacks, data
from tfrobust.cli import resume
from tfrobust.cli.main import main
from tfrobust.models import RobustModel, load_model


@pytest.fixture(scope="module")
def digits():
    return data.load_arrays("mnist-sample", "train", limit=64)


def tiny_model(attack=None):
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                                 keras.layers.Dense(8, activation="relu")])
    model = RobustModel(backbone, keras.layers.Dense(10),
                        attack=attack or attacks.PGD(epsilon=0.3, num_steps=2),
                        eval_attack=False)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    return model


def with_value(x, value, index=(3, 5, 5, 0)):
    x = x.copy()
    x[index] = value
    return x


def batches(*pairs):
    """A dataset yielding the given (images, labels) batches in order."""
    dataset = tf.data.Dataset.from_tensors(pairs[0])
    for pair in pairs[1:]:
        dataset = dataset.concatenate(tf.data.Dataset.from_tensors(pair))
    return dataset


# (row, fit call on (model, x, y), exception, what the message must say)
FIT_ROWS = [
    ("nan-pixels", lambda m, x, y: m.fit(with_value(x, np.nan), y),
     ValueError, ["Expected finite pixel values", "x with 1 NaN or infinite values"]),
    ("infinite-pixels", lambda m, x, y: m.fit(with_value(x, np.inf), y),
     ValueError, ["Expected finite pixel values", "x with 1 NaN or infinite values"]),
    ("nan-pixels-first-batch", lambda m, x, y: m.fit(batches((with_value(x, np.nan), y))),
     ValueError, ["finite pixel values", "x (first batch) with 1 NaN"]),
    ("one-hot-labels", lambda m, x, y: m.fit(x, np.eye(10, dtype="float32")[y]),
     ValueError, ["shape (batch,)", "labels of x with shape (64, 10)", "argmax"]),
    ("negative-labels", lambda m, x, y: m.fit(x, y - 1),
     ValueError, ["class labels in [0, 9]", "labels of x with values in [-1, 8]"]),
    ("fractional-labels", lambda m, x, y: m.fit(x, y + 0.5),
     ValueError, ["integer class labels", "labels of x of dtype float64 with non-integer"]),
    ("string-labels", lambda m, x, y: m.fit(x, y.astype(str)),
     ValueError, ["integer class labels", "labels of x of dtype <U"]),
    ("too-few-labels", lambda m, x, y: m.fit(x, y[:10]),
     ValueError, ["one label per image (64)", "labels of x with 10 labels"]),
    ("no-examples", lambda m, x, y: m.fit(x[:0], y[:0]),
     ValueError, ["at least one image", "x with shape (0, 28, 28, 1)"]),
    ("empty-first-batch", lambda m, x, y: m.fit(batches((x[:0], y[:0]), (x, y))),
     ValueError, ["at least one image", "x (first batch) with shape (0, 28, 28, 1)"]),
    ("empty-dataset", lambda m, x, y: m.fit(tf.data.Dataset.from_tensor_slices((x, y))
                                            .batch(8).take(0)),
     ValueError, ["non-empty dataset", "x with no batches"]),
    ("batch-size-0", lambda m, x, y: m.fit(x, y, batch_size=0),
     ValueError, ["batch_size >= 1", "batch_size=0"]),
    ("l2-epsilon-beyond-the-image-box",
     lambda m, x, y: tiny_model(attacks.PGD(epsilon=30.0, norm="l2")).fit(x, y),
     ValueError, ["epsilon <= 28, the L2 diameter", "epsilon=30.0"]),
]


@pytest.mark.parametrize("row,call,error,says", FIT_ROWS, ids=[r[0] for r in FIT_ROWS])
def test_fit_refuses_bad_data_and_trains_nothing(digits, row, call, error, says):
    x, y = digits
    model = tiny_model()
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(error) as caught:
        call(model, x, y)
    message = str(caught.value)
    print(f"ROW {row} | {type(caught.value).__name__}: {message}")
    for part in says:
        assert part in message, (part, message)
    assert int(model.optimizer.iterations.numpy()) == 0
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_nan_pixels_in_a_later_batch_stop_training_before_they_reach_the_weights(digits):
    """Only the first batch of a dataset is checked before fit; every batch is checked
    in train_step (not under XLA, which compiles the check away)."""
    x, y = digits
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=False)
    dataset = batches((x[:32], y[:32]), (with_value(x[32:], np.nan, (0, 5, 5, 0)), y[32:]))
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        model.fit(dataset, verbose=0)
    message = str(caught.value)
    print("ROW nan-pixels-later-batch | InvalidArgumentError: "
          + next(line for line in message.splitlines() if "Expected" in line))
    assert "Expected finite pixel values. Received: a batch of x with NaN" in message
    # The weights are those the good batch alone gives.
    alone = tiny_model()
    alone.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=False)
    alone.fit(batches((x[:32], y[:32])), verbose=0)
    for got, want in zip(model.get_weights(), alone.get_weights()):
        np.testing.assert_array_equal(got, want)


# -- saved models --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved(tmp_path_factory, digits):
    path = tmp_path_factory.mktemp("saved") / "model.keras"
    model = tiny_model()
    model.fit(*digits, epochs=1, verbose=0)
    model.save(path)
    return path


def truncated(saved, path):
    raw = saved.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def garbage(saved, path):
    path.write_bytes(b"not a model at all")


def flipped(saved, path):
    """One byte of a stored member changed: the archive is intact, the member's CRC is not."""
    raw = bytearray(saved.read_bytes())
    with zipfile.ZipFile(saved) as archive:
        info = max(archive.infolist(), key=lambda i: i.compress_size)
    # The member's data follows its 30-byte local header, name and extra field.
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    raw[start + info.compress_size // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage,says", [
    (truncated, ["not a zip archive", "truncated, corrupted"]),
    (garbage, ["not a zip archive", "(18 bytes)"]),
    (flipped, ["damaged member", "the file is corrupted"]),
])
def test_a_damaged_keras_file_is_named_with_what_is_wrong(saved, tmp_path, damage, says):
    path = tmp_path / "model.keras"
    damage(saved, path)
    with pytest.raises(ValueError) as caught:
        load_model(path)
    message = str(caught.value)
    print(f"ROW keras-{damage.__name__} | ValueError: {message}")
    assert f"path={str(path)!r}" in message
    for part in says:
        assert part in message, (part, message)
    # tfrobust export says the same and writes nothing.
    assert main(["export", str(path), str(tmp_path / "export")]) == 1
    assert not (tmp_path / "export").exists()
    with pytest.raises(FileNotFoundError, match="path='.*missing.keras'"):
        load_model(tmp_path / "missing.keras")


def test_an_intact_keras_file_loads(saved, digits):
    np.testing.assert_array_equal(load_model(saved).predict(digits[0][:4], verbose=0),
                                  keras.saving.load_model(saved).predict(digits[0][:4],
                                                                         verbose=0))


# -- the command line ----------------------------------------------------------------------

SMALL = ["--limit", "64", "--epochs", "1", "--val-limit", "32", "--eval-limit", "32",
         "--num-steps", "1", "--eval-num-steps", "1", "--batch-size", "32"]

CLI_ROWS = [
    ("epsilon-beyond-the-pixel-range", ["--epsilon", "2"], "epsilon=2.0"),
    ("zero-epochs", ["--epochs", "0"], "epochs=0"),
    ("zero-batch-size", ["--batch-size", "0"], "batch_size=0"),
    ("zero-steps", ["--num-steps", "0"], "num_steps=0"),
    ("zero-evaluation-steps", ["--eval-num-steps", "0"], "eval_num_steps=0"),
    ("zero-step-size", ["--step-size", "0"], "step_size=0.0"),
    ("zero-learning-rate", ["--learning-rate", "0"], "learning_rate=0.0"),
    ("bad-backup-every", ["--backup-every", "0"], "backup_every='0'"),
    ("multi-worker-without-tf-config", ["--distribute", "multi-worker"], "no TF_CONFIG"),
    ("negative-validation-limit", ["--val-limit", "-1"], "val_limit=-1"),
    ("zero-evaluation-limit", ["--eval-limit", "0"], "eval_limit=0"),
    ("zero-training-limit", ["--limit", "0"], "limit=0"),
    ("one-class", ["--num-classes", "1"], "num_classes=1"),
    ("class-count-against-the-data's", ["--num-classes", "12"],
     "num_classes=10, as data='mnist-sample' declares. Received: num_classes=12"),
]


@pytest.mark.parametrize("row,flags,says", CLI_ROWS, ids=[r[0] for r in CLI_ROWS])
def test_tfrobust_train_refuses_bad_options_and_writes_nothing(tmp_path, capsys, monkeypatch,
                                                               row, flags, says):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    out = tmp_path / "run"
    assert main(["train", *SMALL, *flags, "--output", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    print(f"ROW {row} | {err}")
    assert says in err and "Expected" in err
    assert not out.exists()


def test_the_class_count_is_never_guessed_from_a_one_example_training_set(
        digits, tmp_path, capsys):
    """One training digit (a 7) in an .npz without a num_classes entry: the class count
    was 8 (largest label + 1) before; now it is asked for, and once given the run says
    that the training set covers one class of ten."""
    x, y = digits
    one = tmp_path / "one.npz"
    np.savez(one, x_train=(x[:1] * 255).astype(np.uint8), y_train=np.array([7]),
             x_test=(x[:8] * 255).astype(np.uint8), y_test=y[:8])
    options = ["--data", str(one), "--epochs", "1", "--num-steps", "1", "--eval-num-steps", "1",
               "--val-limit", "8", "--eval-limit", "8"]
    assert main(["train", *options, "--output", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err.strip()
    print(f"ROW one-example-npz-without-num-classes | {err}")
    assert "pass num_classes (tfrobust train --num-classes N)" in err
    assert f"its labels, all splits, run from 0 to {max(y[:8])}" in err
    assert not (tmp_path / "a").exists()
    assert main(["train", *options, "--num-classes", "10", "--output", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "(28, 28, 1), 10 classes)" in out
    assert "the training split has examples of only 1 of the 10 classes" in out
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert config["data_info"]["num_classes"] == 10 and config["data_info"]["classes_in_train"] == 1


EVALUATE_ROWS = [
    ("evaluate-zero-batch-size", ["--batch-size", "0"], "batch_size=0"),
    ("evaluate-zero-limit", ["--limit", "0"], "limit=0"),
    ("evaluate-tolerance-above-one", ["--tolerance", "2"], "tolerance=2.0"),
    ("evaluate-negative-seed", ["--seed", "-1"], "seed=-1"),
    ("evaluate-unknown-check", ["--checks", "nonsense"], "checks='nonsense'"),
    ("evaluate-unknown-sweep-attack", ["--sweep-attacks", "nonsense"], "attack='nonsense'"),
    ("evaluate-negative-epsilon", ["--epsilon", "-1"], "epsilon=-1.0"),
    ("evaluate-unknown-split", ["--split", "val"], "split='val'"),
    ("evaluate-missing-data-file", ["--data", "missing.npz"], "missing.npz"),
    ("evaluate-shard-beyond-its-count", ["--shard", "3/2"], "shard='3/2'"),
    ("evaluate-shard-not-k-of-n", ["--shard", "half"], "shard='half'"),
    ("evaluate-no-data-and-no-config-json", ["--data", ""], "Expected --data"),
]


@pytest.mark.parametrize("row,flags,says", EVALUATE_ROWS, ids=[r[0] for r in EVALUATE_ROWS])
def test_tfrobust_evaluate_refuses_bad_options_and_writes_nothing(saved, tmp_path, capsys,
                                                                  row, flags, says):
    options = {"--data": "mnist-sample", "--epsilon": "0.1", "--limit": "8", "--quiet": None}
    for flag, value in zip(flags[::2], flags[1::2]):
        options[flag] = value
    argv = [part for flag, value in options.items() if value != ""
            for part in ((flag,) if value is None else (flag, value))]
    out = tmp_path / "report"
    assert main(["evaluate", str(saved), "--report", str(out), *argv]) == 1
    err = capsys.readouterr().err.strip()
    print(f"ROW {row} | {err}")
    assert says in err and "Expected" in err
    assert not out.exists()


@pytest.mark.parametrize("command,flag,value", [
    ("train", "--norm", "l3"), ("train", "--precision", "float16"),
    ("evaluate", "--precision", "float16"), ("train", "--distribute", "gpu"),
])
def test_a_value_outside_an_options_choices_is_named(saved, tmp_path, capsys, command, flag,
                                                     value):
    argv = [command, "--output" if command == "train" else "--report", str(tmp_path / "out"),
            flag, value] + ([str(saved)] if command == "evaluate" else [])
    with pytest.raises(SystemExit) as caught:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    print(f"ROW {command}{flag}-{value} | {err}")
    assert caught.value.code == 2 and f"argument {flag}: invalid choice: '{value}'" in err
    assert not (tmp_path / "out").exists()


def test_a_failed_evaluation_leaves_no_empty_cache_in_an_existing_directory(
        saved, tmp_path, capsys):
    """The report directory existed (with the user's file): a run that fails after the
    cache was made removes the empty cache and keeps the directory and the file."""
    out = tmp_path / "report"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    x, y = data.load_arrays("mnist-sample", "test", limit=8)
    bad = tmp_path / "labels.npz"  # label 12 for a 10-class model: refused after the clean pass
    np.savez(bad, x_train=(x * 255).astype(np.uint8), y_train=y,
             x_test=(x * 255).astype(np.uint8), y_test=np.where(np.arange(8) == 3, 12, y))
    assert main(["evaluate", str(saved), "--report", str(out), "--data", str(bad),
                 "--epsilon", "0.1", "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    print(f"ROW evaluate-failing-into-an-existing-directory | {err}")
    assert "Expected class labels in [0, 9]" in err
    assert set(os.listdir(out)) - {".lock"} == {"notes.txt"}  # the lock file may stay


def test_unknown_method_in_a_config_file(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text('method = "magic"\n')
    assert main(["train", "--config", str(config), "--output", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip()
    print(f"ROW unknown-method | {err}")
    assert "method='magic'" in err and "pgd-at" in err
    assert not (tmp_path / "run").exists()


def test_a_malformed_tf_config(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["127.0.0.1:1"]}}')
    assert main(["train", *SMALL, "--distribute", "multi-worker", "--output",
                 str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip()
    print(f"ROW malformed-tf-config | {err}")
    assert "Expected TF_CONFIG like" in err and "TF_CONFIG='{\"cluster\"" in err
    assert not (tmp_path / "run").exists()


def test_an_output_path_that_is_a_file(tmp_path, capsys):
    out = tmp_path / "run"
    out.write_text("notes")
    assert main(["train", *SMALL, "--output", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    print(f"ROW output-is-a-file | {err}")
    assert f"--output {str(out)!r} is a file" in err
    assert out.read_text() == "notes"


def backup_of(out, **changes):
    """A backup directory as an interrupted run with SMALL's options (and `changes`) leaves it."""
    from tfrobust.cli import train

    args = train.add_parser(__import__("argparse").ArgumentParser().add_subparsers()).parse_args(
        [*SMALL, "--output", str(out)])
    options = {**train.resolve_options(args), **changes}
    directory = out / "backup"
    resume.write_options(str(directory), options)
    return directory


def snapshot(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_resuming_with_other_options_is_refused_and_keeps_the_backup(tmp_path, capsys):
    out = tmp_path / "run"
    directory = backup_of(out, epsilon=0.2)
    before = snapshot(directory)
    assert main(["train", *SMALL, "--output", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    print(f"ROW resume-with-other-options | {err}")
    assert "epsilon=0.3 (the backup has 0.2)" in err and "delete" in err
    assert snapshot(directory) == before and sorted(os.listdir(out)) == ["backup"]


def test_an_unreadable_backup_is_refused_and_kept(tmp_path, capsys):
    out = tmp_path / "run"
    directory = backup_of(out)
    (directory / "state.json").write_text('{"epoch": 1, "weig')   # cut short by hand
    before = snapshot(directory)
    assert main(["train", *SMALL, "--output", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    print(f"ROW unreadable-backup | {err}")
    assert "Expected a readable backup" in err and "state.json" in err
    assert snapshot(directory) == before
    json.loads((directory / resume.OPTIONS_FILE).read_text())  # untouched


def test_a_config_file_that_does_not_parse_is_named(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text("epochs = 1\nepochs = 2\n")  # a duplicate key
    assert main(["train", "--config", str(config), "--output", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip()
    print(f"ROW duplicate-toml-key | {err}")
    assert f"--config {str(config)!r}, which does not parse" in err
    assert not (tmp_path / "run").exists()


def test_an_export_version_beyond_any_integer_type(saved, tmp_path, capsys):
    path = saved
    out = tmp_path / "serving"
    assert main(["export", str(path), str(out), "--version", "99999999999999999999",
                 "--allow-untrained"]) == 1
    err = capsys.readouterr().err.strip()
    print(f"ROW huge-export-version | {err}")
    assert "version=99999999999999999999" in err and "isfinite" not in err
    assert not out.exists() or not any(out.iterdir())


def test_a_directory_the_user_may_not_write_is_named(saved, tmp_path, capsys):
    # /sys refuses new entries even to root, so this holds however the tests run.
    path = saved
    assert main(["export", str(path), "/sys/tfrobust-test-export", "--allow-untrained"]) == 1
    err = capsys.readouterr().err.strip()
    print(f"ROW unwritable-output | {err}")
    assert "Expected a place this user may write" in err and "/sys/tfrobust-test-export" in err


@pytest.mark.parametrize("shape, says", [
    ((28, 28, 3), "The channels differ"),
    ((32, 32, 3), "images of shape (32, 32, 3)"),
])
def test_evaluating_images_the_model_cannot_take_names_both_shapes(digits, shape, says):
    import tfrobust

    x = np.zeros((4, *shape), np.float32)
    with pytest.raises(ValueError) as caught:
        tfrobust.evaluate(tiny_model(), (x, np.zeros(4, np.int64)), epsilon=0.1, verbose=False)
    message = str(caught.value)
    print(f"ROW model-input-mismatch {shape} | {message}")
    assert "Expected images of the model's input shape (28, 28, 1)" in message and says in message


def test_a_one_example_evaluation_says_what_it_cannot_tell(digits):
    import tfrobust

    model = tiny_model()
    x, y = digits
    predicted = np.argmax(model.predict(x, verbose=0), -1)
    wrong = int(np.flatnonzero(predicted != y)[0])
    right = int(np.flatnonzero(predicted == y)[0])
    quick = dict(epsilon=0.1, attacks=["fgsm"], sweep_attacks=[], checks=False, verbose=False)
    report = tfrobust.evaluate(model, (x[wrong:wrong + 1], y[wrong:wrong + 1]), **quick)
    text = report.summary()
    print(f"ROW one-misclassified-example | {text}")
    assert "no example was classified correctly, so no attack ran" in text
    assert "only 1 example: each one is 100 points of accuracy" in text
    assert "standard error of 50 points" in text
    report = tfrobust.evaluate(model, (x[right:right + 1], y[right:right + 1]), **quick)
    assert "no attack ran" not in report.summary() and "only 1 example" in report.summary()
    assert "only 64 examples: each one is 1.56 points" in tfrobust.evaluate(
        model, (x, y), **quick).summary()
    many = tfrobust.evaluate(model, data.load_arrays("mnist-sample", "test", limit=100), **quick)
    assert "note:" not in many.summary()
