"""tfrobust.utils.files: every artefact is written whole, through one helper."""

import os

import numpy as np
import pytest

from tfrobust.utils.files import write_atomic, write_text


def test_a_write_lands_whole_with_the_usual_permissions_and_its_extension(tmp_path):
    seen = []

    def write(temporary):
        seen.append(os.path.basename(temporary))
        np.savez(temporary, a=np.arange(3))

    path = write_atomic(tmp_path / "units.npz", write)
    assert os.fspath(path) == os.fspath(tmp_path / "units.npz")
    # NumPy would append ".npz" to a name without it: the temporary keeps the target's name.
    assert seen[0].startswith(".tmp-") and seen[0].endswith("-units.npz")
    assert np.load(path)["a"].tolist() == [0, 1, 2]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
    assert os.listdir(tmp_path) == ["units.npz"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "state.json"
    write_text(path, '{"epoch": 1}')

    def half_then_fail(temporary):
        with open(temporary, "w") as handle:
            handle.write('{"epo')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, half_then_fail)
    assert path.read_text() == '{"epoch": 1}'
    assert os.listdir(tmp_path) == ["state.json"]
    write_text(path, '{"epoch": 2}')
    assert path.read_text() == '{"epoch": 2}'
