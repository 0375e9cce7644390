"""`BackupAndRestore` keeps the training time, so a resumed run reports the whole of it."""

import json
import types

import keras
import numpy as np
import pytest

from tfrobust import backup as backup_lib


@pytest.fixture
def clock(monkeypatch):
    """The backup module's clock, moved on by hand: 100 s an epoch (see `Tick`)."""
    now = types.SimpleNamespace(value=1000.0)
    monkeypatch.setattr(backup_lib, "time", types.SimpleNamespace(monotonic=lambda: now.value))
    return now


class Tick(keras.callbacks.Callback):
    """Every epoch takes 100 s of the fake clock (before the backup that follows it)."""

    def __init__(self, clock):
        super().__init__()
        self.clock = clock

    def on_epoch_end(self, epoch, logs=None):
        self.clock.value += 100.0


def fit(directory, clock, epochs):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((8, 3), "float32"), np.zeros((8, 2), "float32")
    backup = backup_lib.BackupAndRestore(str(directory), delete_checkpoint=False)
    model.fit(x, y, epochs=epochs, batch_size=4, verbose=0, callbacks=[Tick(clock), backup])
    return backup


def test_a_resumed_fit_counts_the_seconds_of_the_earlier_processes(tmp_path, clock):
    first = fit(tmp_path, clock, epochs=2)
    assert first.train_seconds == 200.0 and first.train_seconds_since_epoch == 0
    state = backup_lib.read_state(str(tmp_path))
    assert (state["epoch"], state["train_seconds"], state["train_seconds_since_epoch"]) == (
        2, 200.0, 0)

    clock.value += 5000.0                        # the time between the two processes: not counted
    resumed = fit(tmp_path, clock, epochs=3)     # epoch 3 only
    assert resumed.train_seconds == 300.0 and resumed.train_seconds_since_epoch == 0
    assert backup_lib.read_state(str(tmp_path))["train_seconds"] == 300.0
    clock.value += 50.0                          # after fit: the clock has stopped
    assert resumed.train_seconds == 300.0


def test_a_backup_without_the_time_counts_from_its_epoch(tmp_path, clock):
    """A backup written before tfrobust kept the time: the count covers the epochs since."""
    fit(tmp_path, clock, epochs=2)
    path = tmp_path / backup_lib.STATE_FILE
    state = json.loads(path.read_text())
    del state["train_seconds"], state["train_seconds_since_epoch"]
    path.write_text(json.dumps(state))

    resumed = fit(tmp_path, clock, epochs=4)     # epochs 3 and 4
    assert resumed.train_seconds == 200.0 and resumed.train_seconds_since_epoch == 2
    again = backup_lib.read_state(str(tmp_path))
    assert (again["train_seconds"], again["train_seconds_since_epoch"]) == (200.0, 2)
