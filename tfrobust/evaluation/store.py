"""A cache of finished evaluation units, so an interrupted evaluation resumes."""

import hashlib
import json
import os

import numpy as np

from tfrobust.utils.files import write_atomic


def digest(*parts):
    """A SHA-256 hex digest of JSON-serialisable parts (arrays by their bytes)."""
    hasher = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            hasher.update(str((part.dtype.str, part.shape)).encode())
            hasher.update(np.ascontiguousarray(part).tobytes())
        else:
            hasher.update(json.dumps(part, sort_keys=True, default=str).encode())
    return hasher.hexdigest()


def file_digest(path):
    """The SHA-256 hex digest of a file's bytes."""
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


class UnitStore:
    """Results of evaluation units by key: in memory, and on disk when given a directory.

    A unit is one attack run on one batch of examples; its key hashes
    everything its result depends on (model weights, data, attack config,
    examples and seed), so a stale result is never reused. Each unit is
    written to a temporary file and renamed, so an interrupted write leaves
    nothing that looks finished.

    Args:
        directory: where to keep units across runs, or None for memory only.
    """

    def __init__(self, directory=None):
        self.directory = directory
        self._memory = {}
        self.computed = 0
        self.reused = 0
        if directory is not None:
            os.makedirs(directory, exist_ok=True)

    def _path(self, key):
        return os.path.join(self.directory, f"{key}.npz")

    def get(self, key):
        """The unit's arrays, or None if it has not been computed."""
        if key in self._memory:
            return self._memory[key]
        if self.directory is not None and os.path.exists(self._path(key)):
            try:
                with np.load(self._path(key)) as stored:
                    arrays = {name: stored[name] for name in stored.files}
            except (OSError, ValueError):  # a damaged file: compute the unit again
                return None
            self._memory[key] = arrays
            self.reused += 1
            return arrays
        return None

    def put(self, key, arrays):
        self._memory[key] = arrays
        self.computed += 1
        if self.directory is None:
            return
        write_atomic(self._path(key), lambda temporary: np.savez(temporary, **arrays))

    def count_on_disk(self):
        if self.directory is None or not os.path.isdir(self.directory):
            return 0
        return sum(name.endswith(".npz") and not name.startswith(".tmp-")
                   for name in os.listdir(self.directory))
