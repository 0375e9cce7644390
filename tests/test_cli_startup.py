"""The command answers `--help`, `--version` and argument errors without TensorFlow, and
keeps TensorFlow's start-up lines out of a normal run."""

import json
import os
import subprocess
import sys

from tfrobust.cli import catalog

_PROBE = """
import json, sys
sys.argv = ["tfrobust"]  # what the installed script sees
from tfrobust.cli.main import main
codes = []
for argv in (["--help"], ["--version"], ["train", "--help"], ["evaluate", "--help"],
             ["export", "--help"], ["tune", "--help"], ["train", "--epsilom", "0.1"]):
    try:
        codes.append(main(argv))
    except SystemExit as exit:
        codes.append(exit.code)
print(json.dumps({"codes": codes, "imported": sorted(
    name for name in ("tensorflow", "keras", "tf_keras", "keras_tuner") if name in sys.modules)}))
"""


def _run(*args):
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the command's own default, as a user has it
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_help_version_and_argument_errors_import_no_tensorflow():
    done = _run("-c", _PROBE)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["codes"] == [0, 0, 0, 0, 0, 0, 2]
    assert result["imported"] == []
    assert "did you mean --epsilon?" in done.stderr


def test_python_dash_m_tfrobust_starts_without_tensorflow():
    done = _run("-X", "importtime", "-m", "tfrobust", "train", "--epoch", "1")
    assert done.returncode == 2
    assert "did you mean --epochs?" in done.stderr
    imported = [line.split("|")[-1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:")]
    assert "tfrobust.cli.main" in imported
    assert not [name for name in imported if name.split(".")[0] in ("tensorflow", "keras")]


def test_a_command_that_runs_shows_no_tensorflow_start_up_lines(tmp_path):
    missing = str(tmp_path / "missing.keras")
    quiet = _run("-m", "tfrobust", "evaluate", missing, "--report", str(tmp_path / "r"))
    assert quiet.returncode == 1
    # TensorFlow was started (the command ran) and said nothing: the error is all there is.
    assert quiet.stderr.strip().splitlines() == [
        line for line in quiet.stderr.strip().splitlines() if line.startswith("tfrobust evaluate")]
    assert "does not exist" in quiet.stderr
    verbose = _run("-m", "tfrobust", "evaluate", missing, "--report", str(tmp_path / "r"),
                   "--verbose")
    assert verbose.returncode == 1 and "does not exist" in verbose.stderr
    assert len(verbose.stderr.splitlines()) >= len(quiet.stderr.splitlines())


def test_the_catalog_snapshot_matches_the_registry():
    with open(catalog.SNAPSHOT) as handle:
        assert handle.read() == catalog.render(catalog.live()), (
            "tfrobust/cli/_catalog.py is stale: run python -m tfrobust.cli.catalog --write")


def test_catalog_check_and_write_from_the_command_line(tmp_path):
    checked = _run("-m", "tfrobust.cli.catalog", "--check")
    assert checked.returncode == 0 and "up to date" in checked.stdout
    written = _run("-m", "tfrobust.cli.catalog", "--write")
    assert written.returncode == 0 and "unchanged" in written.stdout
