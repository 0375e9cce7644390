"""Property-based tests (hypothesis): any value given to the command line, a config file or
the data loaders either works or is refused with a tfrobust error that names what it refused;
never a traceback. Each property tries a bounded number of examples, so the suite keeps its
time budget."""

import json
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tfrobust import data
from tfrobust.cli import train
from tfrobust.cli.main import main

# PROPERTY_EXAMPLES=500 pytest tests/test_properties.py: a longer, random search (the
# suite runs a fixed 40 examples per property).
EXAMPLES = os.environ.get("PROPERTY_EXAMPLES")
BOUNDED = settings(max_examples=int(EXAMPLES or 40), deadline=None, derandomize=not EXAMPLES,
                   suppress_health_check=[HealthCheck.function_scoped_fixture])

# Flags of `tfrobust train` that take a value, with the option they set.
TRAIN_FLAGS = {"--epsilon": "epsilon", "--num-steps": "num_steps", "--step-size": "step_size",
               "--eval-num-steps": "eval_num_steps", "--epochs": "epochs",
               "--batch-size": "batch_size", "--limit": "limit", "--val-limit": "val_limit",
               "--eval-limit": "eval_limit", "--learning-rate": "learning_rate",
               "--dropout": "dropout", "--seed": "seed", "--num-classes": "num_classes",
               "--backup-every": "backup_every", "--image-size": "image_size",
               "--beta": "beta", "--scale": "scale", "--margin": "margin"}

VALUES = st.one_of(st.integers(-10**20, 10**20), st.floats(allow_nan=True, allow_infinity=True),
                   st.text(max_size=12), st.sampled_from(["0", "-1", "1e400", "nan", "inf",
                                                         "0x10", "1,2", "3x4", "1_0", " 5"]))


def _refused(capsys, call, names):
    """Run `call`; it must end in argparse's usage error or a tfrobust error naming one of
    `names`; returns the message."""
    try:
        status = call()
    except SystemExit as stop:  # argparse: the flag and why
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert stop.code == 2 and "error: argument" in err, err
        return err
    err = capsys.readouterr().err.strip()
    assert status == 1 and err.startswith("tfrobust train: error: Expected"), err
    assert any(name in err for name in names), err
    return err


@pytest.fixture
def output_file(tmp_path):
    """An --output that is a file: a run whose options all pass stops there, before training."""
    path = tmp_path / "taken"
    path.write_text("")
    return str(path)


@BOUNDED
@given(flag=st.sampled_from(sorted(TRAIN_FLAGS)), value=VALUES)
def test_any_value_of_a_train_flag_runs_or_is_named(capsys, output_file, flag, value):
    text = value if isinstance(value, str) else repr(value)
    if text.startswith("-") and not text.lstrip("-")[:1].isdigit():
        text = " " + text  # argparse would read it as another flag
    _refused(capsys, lambda: main(["train", flag, text, "--output", output_file]),
             (TRAIN_FLAGS[flag], flag, "--output"))


def _toml(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") \
            if math.isinf(value) else repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str):
        # TOML's escapes are JSON's; it takes any other character as it is, except DEL.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    return str(value)


TOML_VALUES = st.one_of(st.booleans(), st.integers(-2**63, 2**63 - 1),
                        st.floats(allow_nan=True, allow_infinity=True),
                        st.text(max_size=10), st.lists(st.integers(-5, 300), max_size=3))


@BOUNDED
@given(key=st.sampled_from(sorted(train.defaults())), value=TOML_VALUES)
# What the search found: tracebacks ("unhashable type: 'list'", OverflowError, "cannot
# convert float NaN to integer") until they were fixed.
@example(key="model", value=[])
@example(key="backup_every", value=math.inf)
@example(key="val_limit", value=math.nan)
@example(key="backup_every", value=True)
def test_any_value_in_a_config_file_runs_or_is_named(capsys, tmp_path_factory, output_file,
                                                     key, value):
    if key == "output":
        return  # the --output flag given here wins over the file's
    config = tmp_path_factory.mktemp("config") / "run.toml"
    config.write_text(f"{key} = {_toml(value)}\n", encoding="utf-8")
    _refused(capsys, lambda: main(["train", "--config", str(config), "--output", output_file]),
             (key, "--output", "data=", "method", "model"))


def _array(dtype, shape, fill):
    with np.errstate(invalid="ignore"):  # NaN to an integer type: whatever NumPy makes of it
        return np.full(shape, fill).astype(dtype)


ARRAYS = st.builds(
    _array,
    st.sampled_from([np.uint8, np.int64, np.float32, np.float64, np.bool_, np.int8]),
    st.one_of(st.tuples(st.integers(0, 3)),
              st.tuples(st.integers(0, 3), st.integers(1, 4), st.integers(1, 4)),
              st.tuples(st.integers(0, 3), st.integers(1, 4), st.integers(1, 4),
                        st.sampled_from([1, 2, 3]))),
    st.sampled_from([0, 1, 9, 255, -1, 0.5, 1e9, np.nan]))


@BOUNDED
@given(arrays=st.fixed_dictionaries({k: ARRAYS for k in ("x_train", "y_train", "x_test",
                                                         "y_test")}),
       num_classes=st.one_of(st.none(), st.integers(-1, 12)))
def test_any_npz_contents_load_or_are_named(tmp_path_factory, arrays, num_classes):
    path = tmp_path_factory.mktemp("npz") / "data.npz"
    np.savez(path, **arrays)
    try:
        meta = data.info(str(path), num_classes=num_classes)
        x, y = data.load_arrays(str(path), "train")
    except (ValueError, TypeError) as error:
        message = str(error)
        assert message.startswith("Expected") and (
            "data=" in message or "num_classes" in message or "_train" in message
            or "_test" in message), message
        return
    assert meta.num_classes >= 2 and x.dtype == np.float32 and y.dtype == np.int32
    assert len(x) == len(y) and (y.size == 0 or y.max() < meta.num_classes)
    assert x.size == 0 or (0.0 <= x.min() and x.max() <= 1.0)
