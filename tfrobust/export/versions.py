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
import socket
import time

from tfrobust.utils import validation
from tfrobust.utils.files import sync, sync_tree

_VERSION_NAME = re.compile(r"^[0-9]+$")
_TEMP_PREFIX = ".tmp-"
_OLD_PREFIX = ".old-"
# Staging directories only: a dead writer's `.old-` one may hold the version it replaced.
_STAGING_NAME = re.compile(r"^\.tmp-[0-9]+-(?P<host>[A-Za-z0-9_.]+)-(?P<pid>[0-9]+)-[0-9a-f]+$")


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
    claim = version is None  # the next free number, claimed when the version is complete
    if claim:
        version = next_version(directory)
    # TF Serving reads version numbers as int64.
    version = validation.check_number("version", version, minimum=1, maximum=2 ** 63 - 1,
                                      integer=True)
    target = os.path.join(directory, str(version))
    _refuse_existing(target, version, overwrite)
    os.makedirs(directory, exist_ok=True)
    remove_stale(directory)
    staging = _sibling(directory, _TEMP_PREFIX, version)
    os.mkdir(staging)  # with the permissions of os.makedirs, so the server can read it
    try:
        write(staging)
        sync_tree(staging)
        while True:
            try:
                _move_into_place(staging, target, version, overwrite)
                break
            except FileExistsError:
                if not claim:
                    raise
                # Another exporter took this number while we wrote: the next free one.
                # The rename fails on an existing version, so each number has one owner.
                version = max(version, next_version(directory) - 1) + 1
                target = os.path.join(directory, str(version))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    sync(directory)
    return target


def remove_stale(directory, max_age=24 * 3600):
    """Remove the staging directories of exports that died (killed mid-write).

    A staging directory's name holds its writer's host and process id: one of this host
    whose process is gone is removed, and one of any host untouched for `max_age`
    seconds (an export takes seconds). Returns the names removed.
    """
    removed = []
    for name in os.listdir(directory):
        match = _STAGING_NAME.match(name)
        if match is None:
            continue
        path = os.path.join(directory, name)
        host, pid = match.group("host"), int(match.group("pid"))
        try:
            age = time.time() - os.stat(path).st_mtime
        except FileNotFoundError:
            continue
        dead = host == _host() and not _alive(pid)
        if dead or age > max_age:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(name)
    return removed


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _host():
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())


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
    """A fresh path in `directory` whose name TF Serving does not take for a version:
    `<prefix><version>-<host>-<pid>-<random>` (see `remove_stale`)."""
    return os.path.join(directory,
                        f"{prefix}{version}-{_host()}-{os.getpid()}-{secrets.token_hex(4)}")
