"""Export versions are claimed atomically, and staging directories of dead exporters go."""

import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from tfrobust.export import versions


def _write_files(marker):
    def write(path):
        with open(os.path.join(path, "saved_model.pb"), "w") as handle:
            handle.write(marker)
    return write


def test_a_version_taken_while_writing_moves_the_claim_to_the_next_number(tmp_path):
    # The second writer picks version 1 too, but the first completes it while the
    # second writes: the second ends as version 2, and version 1 stays the first's.
    def slow(path):
        versions.write_version(tmp_path, None, _write_files("first"))
        _write_files("second")(path)

    second = versions.write_version(tmp_path, None, slow)
    assert second == os.path.join(tmp_path, "2")
    assert versions.existing_versions(tmp_path) == [1, 2]
    assert open(os.path.join(tmp_path, "1", "saved_model.pb")).read() == "first"
    assert open(os.path.join(tmp_path, "2", "saved_model.pb")).read() == "second"
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []


def test_an_explicit_version_taken_meanwhile_is_still_refused(tmp_path):
    def slow(path):
        versions.write_version(tmp_path, 3, _write_files("first"))

    with pytest.raises(FileExistsError, match="version=3"):
        versions.write_version(tmp_path, 3, slow)
    assert versions.existing_versions(tmp_path) == [3]
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []


def test_staging_directories_of_dead_exporters_are_removed_by_the_next_export(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)  # a process that has ended
    host = versions._host()
    stale = tmp_path / f".tmp-1-{host}-{pid}-0a1b2c3d"
    alive = tmp_path / f".tmp-1-{host}-{os.getpid()}-0a1b2c3d"
    elsewhere_old = tmp_path / ".tmp-1-otherhost-12345-0a1b2c3d"
    elsewhere_new = tmp_path / ".tmp-1-otherhost-12346-0a1b2c3d"
    replaced = tmp_path / f".old-1-{host}-{pid}-0a1b2c3d"
    for path in (stale, alive, elsewhere_old, elsewhere_new, replaced):
        path.mkdir()
        (path / "saved_model.pb").write_text("partial")
    day_ago = time.time() - 2 * 24 * 3600
    os.utime(elsewhere_old, (day_ago, day_ago))
    versions.write_version(tmp_path, None, _write_files("new"))
    left = sorted(n for n in os.listdir(tmp_path) if n.startswith("."))
    # Gone: this host's dead writer and another host's day-old one. Kept: a live writer,
    # another host's recent one, and a moved-aside old version (it may be all that is left).
    assert left == sorted([alive.name, elsewhere_new.name, replaced.name])
    assert versions.existing_versions(tmp_path) == [1]


_EXPORT = """
import sys, time
import tfrobust
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))  # both exporters start at the same moment
result = tfrobust.export.export_saved_model(sys.argv[1], sys.argv[3], allow_untrained=True)
print(result.version)
"""


def test_two_exporters_at_once_write_two_complete_versions(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(3)])
    path = str(tmp_path / "m.keras")
    model.save(path)
    out = str(tmp_path / "serving")
    start = str(time.time() + 12)  # about when both processes have imported TensorFlow
    runs = [subprocess.Popen([sys.executable, "-c", _EXPORT, path, start, out],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-2000:] for _, err in outputs]
    assert sorted(int(out_.strip().splitlines()[-1]) for out_, _ in outputs) == [1, 2]
    assert versions.existing_versions(out) == [1, 2]
    import tensorflow as tf
    x = np.zeros((2, 8, 8, 1), np.float32)
    for version in (1, 2):
        served = tf.saved_model.load(os.path.join(out, str(version)))
        np.testing.assert_allclose(served.signatures["serving_default"](
            images=tf.constant(x))["logits"].numpy(), model.predict(x, verbose=0), atol=1e-6)
    assert [n for n in os.listdir(out) if n.startswith(".")] == []
