"""`BackupAndRestore`: resume an interrupted `fit` where its last backup left off."""

import json
import os
import time

import keras
import numpy as np

from tfrobust.utils.files import sync, write_text

STATE_FILE = "state.json"
_PREFIX = "backup-"


def read_state(backup_dir):
    """The description of the last complete backup in `backup_dir`, or None if there is none.

    Returns:
        A dict with `epoch` (the epoch `fit` resumes at, 0-based),
        `batches_done` (batches of that epoch trained before the backup: 0 for
        a backup at the end of an epoch), `batch` (Keras' ambiguous count),
        `weights` (file name), `history` (the logs of the finished epochs) and
        the extra state the backup keeps.

    Raises:
        ValueError: the backup exists but cannot be read.
    """
    path = os.path.join(backup_dir, STATE_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as handle:
            state = json.load(handle)
        missing = [k for k in ("epoch", "weights", "history") if k not in state]
        if missing:
            raise ValueError(f"no {missing}")
    except (OSError, ValueError) as error:
        raise ValueError(
            f"Expected a readable backup in {backup_dir!r}. Received: {path!r} ({error}). "
            f"Delete {backup_dir!r} to start over.") from None
    return state


def seed_states(model):
    """The state variables of the model's `keras.random.SeedGenerator`s, in a fixed order."""
    return [v for v in model.variables if v.name == "seed_generator_state"]


def objective_states(model):
    """The variables a `RobustModel`'s objective carries from step to step (FreeAT's delta)."""
    objective = getattr(model, "objective", None)
    return list(objective.state_variables()) if hasattr(objective, "state_variables") else []


def skip_epochs(dataset, epochs):
    """Advance a reshuffling dataset as `epochs` epochs of `fit` did, so that a resumed
    run's epochs see the shuffle orders of an uninterrupted run's.

    `tf.data` draws the shuffle order (and augmentation) of each pass over a
    dataset from a seeded stream that advances every time an iterator is
    opened. A resumed run's dataset is new and would start the stream again.
    Keras 3's `fit` (3.15) opens two iterators per epoch after the first when
    the number of batches is known (it opens the next epoch's iterator at the
    end of an epoch, then opens another at the start of that epoch), so the
    stream is advanced by two passes per finished epoch. With an unknown number
    of batches (TFRecord files) Keras' pattern differs between the first epoch
    of a `fit` and the others, and a resumed run sees other orders (a test
    checks the known case: tests/test_resume.py).

    Example:

    >>> state = read_state("runs/mnist/backup")
    >>> skip_epochs(train, state["epoch"] if state else 0)  # doctest: +SKIP
    """
    for _ in range(2 * epochs):
        for _ in dataset.take(1):
            pass


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' `BackupAndRestore`, with atomic backups and the state Keras leaves out.

    Back up the training state during `fit`; a later `fit` with the same
    `backup_dir` restores it and continues at the epoch after the last backup.
    Keras 3's callback writes the weights over `latest.weights.h5` in place and
    then a metadata file, so a process killed while it writes leaves a
    truncated weights file (which the next run cannot load) or new weights
    with the old epoch (which the next run trains again). Here each backup goes
    to new files and `state.json`, which names them, is renamed into place
    last: a backup is either complete or absent. Besides what
    `model.save_weights` writes (weights and optimizer state), a backup keeps
    - the state of the model's seed generators (`RobustModel`'s random starts,
      dropout): `save_weights` leaves them out, so a run resumed with Keras'
      callback draws other random starts than an uninterrupted one;
    - the objective's carried state (FreeAT's perturbation, which
      `save_weights` leaves out too), when training on one device: under a
      distribution strategy each replica holds its own slice and a resumed
      run starts from a zero perturbation;
    - `history`, the logs of every finished epoch, so a resumed run can
      report the whole training;
    - `train_seconds`, the seconds spent in `fit` by this run's processes so
      far, so a resumed run reports the time of the whole training
      (`train_seconds`, with `train_seconds_since_epoch` 0; resumed from a
      backup written before tfrobust kept it, the count covers the epochs
      from `train_seconds_since_epoch` on).

    With `save_freq="epoch"`, and `skip_epochs` applied to a reshuffling
    dataset before `fit` (as `tfrobust train` does), a resumed run ends with
    the weights of an uninterrupted one, bit for bit (tests/test_resume.py). A backup made
    within an epoch (`save_freq=N` batches) is resumed as Keras does: the interrupted epoch
    restarts from its first batch with the backed-up weights, so the batches
    it had already trained on are trained on twice.

    Args:
        backup_dir: a directory used by this run only.
        save_freq: `"epoch"`, or back up every `save_freq` batches.
        delete_checkpoint: delete the backup when `fit` ends (whether it
            finished or was stopped by a callback; not when it raised).
        restore_dir: where to restore from, if not `backup_dir`: under a
            multi-worker strategy every worker restores the chief's backup, so
            that a kill between two workers' backups cannot resume them from
            different steps (`tfrobust train` does this where the workers share
            the output directory).

    Example:

    >>> backup = BackupAndRestore("runs/mnist/backup")
    >>> model.fit(train, epochs=10, callbacks=[backup])  # doctest: +SKIP
    """

    def __init__(self, backup_dir, save_freq="epoch", delete_checkpoint=True, restore_dir=None):
        if save_freq != "epoch" and (isinstance(save_freq, bool) or not isinstance(save_freq, int)
                                     or save_freq < 1):
            raise ValueError("Expected save_freq to be 'epoch' or a number of batches >= 1. "
                             f"Received: save_freq={save_freq!r}")
        super().__init__(backup_dir, save_freq=save_freq, delete_checkpoint=delete_checkpoint)
        self.history = []
        self.restore_dir = restore_dir or backup_dir
        self._saves = 0
        self._batches_done = 0
        self._seconds_before = 0.0
        self._started = None
        self.train_seconds_since_epoch = 0

    @property
    def train_seconds(self):
        """Seconds in `fit`: the earlier processes' (from the backup) and this one's."""
        now = 0.0 if self._started is None else time.monotonic() - self._started
        return self._seconds_before + now

    def on_train_begin(self, logs=None):
        self.history = []
        self._started = time.monotonic()
        self._seconds_before, self.train_seconds_since_epoch = 0.0, 0
        state = read_state(self.restore_dir)
        if state is None:
            return
        if not self.model.built:
            raise ValueError("Expected a built model to restore a backup into. Received: "
                             f"{self.model.name} is not built; call it on a batch first.")
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        path = os.path.join(self.restore_dir, state["weights"])
        try:
            self.model.load_weights(path)
        except (OSError, ValueError) as error:
            raise ValueError(
                f"Expected the backup {path!r} to hold this model's weights. Received: "
                f"{type(error).__name__}: {str(error).splitlines()[0]} Delete "
                f"{self.restore_dir!r} to start over.") from error
        for variable, value in zip(seed_states(self.model), state.get("seed_generators", [])):
            variable.assign(np.asarray(value, dtype=variable.dtype))
        carried = state.get("objective_state")
        if carried:
            with np.load(os.path.join(self.restore_dir, carried)) as arrays:
                values = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
            for variable, value in zip(objective_states(self.model), values):
                if tuple(variable.shape) == value.shape:
                    variable.assign(value)
        self.history = list(state["history"])
        self._saves = int(state.get("saves", 0))
        if state.get("train_seconds") is None:  # a backup from before tfrobust kept the time
            self.train_seconds_since_epoch = int(state["epoch"])
        else:
            self._seconds_before = float(state["train_seconds"])
            self.train_seconds_since_epoch = int(state.get("train_seconds_since_epoch", 0))
        self._current_epoch = int(state["epoch"])
        self.model._initial_epoch = int(state["epoch"])

    def on_epoch_begin(self, epoch, logs=None):
        # Keras counts epochs from the end of the last one in this process only,
        # so a batch backup in the first resumed epoch would name epoch 0.
        self._current_epoch = epoch
        self._batches_done = 0

    def on_train_batch_end(self, batch, logs=None):
        self._batches_done = batch + 1
        super().on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self.history.append({k: float(v) for k, v in (logs or {}).items()})
        self._batches_done = 0
        super().on_epoch_end(epoch, logs)

    def on_train_end(self, logs=None):
        self.model._initial_epoch = None  # the next fit of this model starts afresh
        self._seconds_before, self._started = self.train_seconds, None  # the clock stops
        super().on_train_end(logs)

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        self._saves += 1
        stem = f"{_PREFIX}{self._saves}"
        weights = f"{stem}.weights.h5"
        self.model.save_weights(os.path.join(self.backup_dir, weights), overwrite=True)
        sync(os.path.join(self.backup_dir, weights))
        carried = None
        variables = objective_states(self.model)
        if variables and self.model.distribute_strategy.num_replicas_in_sync == 1:
            carried = f"{stem}.objective.npz"
            np.savez(os.path.join(self.backup_dir, carried), *[v.numpy() for v in variables])
            sync(os.path.join(self.backup_dir, carried))
        state = {
            "epoch": self._current_epoch, "batches_done": self._batches_done,
            "batch": self._last_batch_seen, "saves": self._saves,
            "weights": weights, "objective_state": carried,
            "seed_generators": [np.asarray(v.numpy()).tolist() for v in seed_states(self.model)],
            "history": self.history, "train_seconds": round(self.train_seconds, 3),
            "train_seconds_since_epoch": self.train_seconds_since_epoch,
        }
        write_text(os.path.join(self.backup_dir, STATE_FILE), json.dumps(state))
        for name in os.listdir(self.backup_dir):
            if name.startswith(_PREFIX) and name not in (weights, carried):
                os.remove(os.path.join(self.backup_dir, name))
