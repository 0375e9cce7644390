"""Files written whole: a reader sees the old file or the new one, never half of one.

One helper for every artefact tfrobust writes (training's `model.keras`, `history.json`
and `config.json`, the backup's state, the evaluation report and its cache, the export):
write to a temporary name beside the target, flush it to disk, rename it into place,
flush the directory.
"""

import os
import secrets


def write_atomic(path, write):
    """`write(temporary_path)`, flushed to disk, then renamed to `path`; returns `path`.

    The temporary file sits in `path`'s directory (a rename within one file system
    is atomic) and ends with `path`'s name, so it keeps the extension that writers
    check or add (Keras' `.keras` and `.weights.h5`, NumPy's `.npz`); its name
    starts with `.tmp-`. It is created with the process' usual permissions. A
    write that fails leaves no temporary file behind, and `path` as it was.

    Args:
        path: the file to write.
        write: a function that writes the whole file at the path it is given.
    """
    directory, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(directory, f".tmp-{os.getpid()}-{secrets.token_hex(4)}-{name}")
    try:
        write(temporary)
        sync(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    sync(directory)
    return path


def write_text(path, text):
    """`write_atomic` of a text file."""
    def write(temporary):
        with open(temporary, "w") as handle:
            handle.write(text)

    return write_atomic(path, write)


def sync(path):
    """fsync one file or directory; best effort where the platform cannot (Windows directories)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platform specific
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - platform specific
        pass
    finally:
        os.close(fd)


def sync_tree(path):
    """fsync every file and directory under `path`, so a rename cannot expose empty files."""
    for root, _, files in os.walk(path):
        for name in files:
            sync(os.path.join(root, name))
        sync(root)
