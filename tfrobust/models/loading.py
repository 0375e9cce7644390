"""`load_model`: a `.keras` file back as a model, with errors that say what is wrong."""

import os
import zipfile

import keras


def load_model(path, **kwargs):
    """`keras.saving.load_model(path)`, after checking that `path` is a whole `.keras` file.

    Keras reports a missing, truncated or corrupted file alike, as "File not
    found ... Please ensure the file is an accessible `.keras` zip file". This
    tells them apart: a `.keras` file is a zip archive whose members carry
    CRC-32 checksums, so a file cut short (a copy or download interrupted) or
    damaged is refused with its path and what is wrong with it.

    Args:
        path: the `.keras` file.
        **kwargs: passed to `keras.saving.load_model` (`custom_objects`, `compile`, ...).

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: the file is not a whole `.keras` archive.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Expected an existing .keras file. Received: path={path!r}")
    if not zipfile.is_zipfile(path):
        raise ValueError(
            "Expected a .keras file (a zip archive written by model.save). Received: "
            f"path={path!r} ({os.path.getsize(path)} bytes), which is not a zip archive: the "
            "file is truncated, corrupted or of another format.")
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        damaged = f"({type(error).__name__}: {error})"
    if damaged is not None:
        raise ValueError(
            "Expected a .keras file whose members pass their checksums. Received: "
            f"path={path!r} with a damaged member {damaged}: the file is corrupted.")
    return keras.saving.load_model(path, **kwargs)
