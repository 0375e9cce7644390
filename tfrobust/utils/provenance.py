"""Where a result came from: package versions, commit and platform."""

import os
import platform
import subprocess


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
