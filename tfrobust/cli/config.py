"""Run configuration: defaults, config files (TOML or JSON), and provenance."""

import json
import os
import platform
import subprocess
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


def read_config_file(path):
    """Read a `.toml` or `.json` file into a flat dict of option names to values."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Expected an existing config file. Received: --config {path!r}")
    suffix = os.path.splitext(path)[1].lower()
    with open(path, "rb") as handle:
        if suffix == ".toml":
            data = tomllib.load(handle)
        elif suffix == ".json":
            data = json.load(handle)
        else:
            raise ValueError(
                f"Expected a .toml or .json config file. Received: --config {path!r}"
            )
    if not isinstance(data, dict):
        raise ValueError(f"Expected a table of options in {path}. Received: {type(data).__name__}")
    return {key.replace("-", "_"): value for key, value in data.items()}


def resolve(defaults, file_values, cli_values):
    """Merge defaults < config file < explicit command-line flags.

    Raises ValueError naming unknown keys of the config file.
    """
    unknown = sorted(set(file_values) - set(defaults))
    if unknown:
        raise ValueError(
            f"Expected config keys among {sorted(defaults)}. Received unknown keys: {unknown}"
        )
    resolved = dict(defaults)
    resolved.update(file_values)
    resolved.update({k: v for k, v in cli_values.items() if v is not None})
    return resolved


def git_commit():
    """The commit of the tfrobust source tree (or the working directory), if any."""
    here = os.path.dirname(os.path.abspath(__file__))
    for where in (here, os.getcwd()):
        try:
            out = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                timeout=10, check=True,
            )
            return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
    return None


def provenance():
    """Versions and commit to store beside every result."""
    import keras
    import tensorflow as tf

    from tfrobust.version import __version__

    return {
        "tfrobust_version": __version__,
        "git_commit": git_commit(),
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
    }
