"""Versioned model directories (`OUTDIR/<version>/`) that appear complete or not at all.

TensorFlow Serving watches a model's base directory and loads every
subdirectory whose name is an integer as a version of the model. It polls:
a version directory that is still being written can be picked up half
written. So a version is written into a temporary directory beside it, whose
name is not a number (TF Serving ignores it), then renamed into place; a
rename within one file system is atomic, so the server sees either no
version or the whole one.
"""

import os
import re
import secrets
import shutil

from tfrobust.utils import validation
from tfrobust.utils.files import sync, sync_tree

_VERSION_NAME = re.compile(r"^[0-9]+$")
_TEMP_PREFIX = ".tmp-"
_OLD_PREFIX = ".old-"


def existing_versions(directory):
    """The integer versions under `directory` (sorted; empty if it does not exist)."""
    if not os.path.isdir(directory):
        return []
    return sorted(int(name) for name in os.listdir(directory)
                  if _VERSION_NAME.match(name) and os.path.isdir(os.path.join(directory, name)))


def next_version(directory):
    """One more than the highest version under `directory`, or 1."""
    versions = existing_versions(directory)
    return versions[-1] + 1 if versions else 1


def write_version(directory, version, write, overwrite=False):
    """Write one version of a model atomically; returns its path `directory/<version>`.

    Args:
        directory: the model's base directory (created if missing).
        version: a positive integer, or None for `next_version(directory)`.
        write: a function of one path that writes the version's files there
            (the path is an existing, empty directory).
        overwrite: replace an existing version instead of refusing.

    Raises:
        FileExistsError: the version exists (and `overwrite` is False), or
            `directory` is a file.
    """
    directory = os.fspath(directory)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise FileExistsError(
            f"Expected a directory to export into. Received: directory={directory!r} is a file"
        )
    if version is None:
        version = next_version(directory)
    # TF Serving reads version numbers as int64.
    version = validation.check_number("version", version, minimum=1, maximum=2 ** 63 - 1,
                                      integer=True)
    target = os.path.join(directory, str(version))
    _refuse_existing(target, version, overwrite)
    os.makedirs(directory, exist_ok=True)
    staging = _sibling(directory, _TEMP_PREFIX, version)
    os.mkdir(staging)  # with the permissions of os.makedirs, so the server can read it
    try:
        write(staging)
        sync_tree(staging)
        _move_into_place(staging, target, version, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    sync(directory)
    return target


def _refuse_existing(target, version, overwrite):
    if os.path.exists(target) and not overwrite:
        raise FileExistsError(
            f"Expected a new version. Received: version={version}, but {target!r} already "
            "exists; pass overwrite=True (--overwrite) to replace it, or another version."
        )


def _move_into_place(staging, target, version, overwrite):
    """Rename `staging` to `target`; an existing `target` (overwrite) is moved aside first.

    Replacing leaves `target` missing between two renames in the same
    directory: a server polling at that instant sees the version disappear
    and come back. Exporting a new version number avoids even that.
    """
    old = None
    if os.path.exists(target):
        _refuse_existing(target, version, overwrite)
        old = _sibling(os.path.dirname(target), _OLD_PREFIX, version)
        os.rename(target, old)
    try:
        os.rename(staging, target)
    except OSError as error:
        if old is not None:
            os.rename(old, target)
        if os.path.exists(target):
            # Another writer created the version between our check and the rename.
            raise FileExistsError(
                f"Expected a new version. Received: version={version}, but {target!r} was "
                "created while exporting."
            ) from error
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _sibling(directory, prefix, version):
    """A fresh path in `directory` whose name TF Serving does not take for a version."""
    return os.path.join(directory, f"{prefix}{version}-{os.getpid()}-{secrets.token_hex(4)}")
