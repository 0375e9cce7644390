"""`tfrobust train` killed with SIGKILL and run again resumes from its last backup."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from tfrobust import backup as backup_lib

TINY = ["--limit", "512", "--epochs", "2", "--batch-size", "64", "--num-steps", "2",
        "--eval-num-steps", "2", "--val-limit", "64", "--eval-limit", "64"]
TIMEOUT = 300


def command(out, *extra):
    return [sys.executable, "-m", "tfrobust.cli.main", "train", *TINY, *extra, "--output", out]


def run(out, *extra):
    result = subprocess.run(command(out, *extra), capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def kill_when(out, extra, ready):
    """Start a run, SIGKILL it as soon as `ready(state)` holds for its backup; return that state."""
    process = subprocess.Popen(command(out, *extra), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    backup_dir = os.path.join(out, "backup")
    deadline = time.time() + TIMEOUT
    try:
        while time.time() < deadline and process.poll() is None:
            state = backup_lib.read_state(backup_dir) if os.path.isdir(backup_dir) else None
            if state is not None and ready(state):
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL, (
        f"the run ended (status {process.returncode}) before it could be killed: "
        + process.stderr.read()[-2000:])
    assert not os.path.exists(os.path.join(out, "model.keras"))
    return backup_lib.read_state(backup_dir)


def weights(out):
    return keras.saving.load_model(os.path.join(out, "model.keras")).get_weights()


def history(out):
    with open(os.path.join(out, "history.json")) as handle:
        return json.load(handle)


METHODS = {"pgd-at": [], "free-at": ["--method", "free-at", "--replays", "2"]}


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """Uninterrupted runs, made once: {method: output directory}."""
    made = {}

    def get(method):
        if method not in made:
            made[method] = str(tmp_path_factory.mktemp("reference") / method)
            run(made[method], *METHODS[method])
        return made[method]

    return get


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_run_killed_between_epochs_resumes_to_the_same_weights(tmp_path, references, method):
    """Backups at the end of each epoch: the resumed run ends bit for bit where an
    uninterrupted run with the same seed ends (PGD-AT with random starts, whose seed
    generator state the backup keeps; FreeAT, whose carried perturbation it keeps)."""
    extra = METHODS[method]
    reference, resumed = references(method), str(tmp_path / "resumed")
    state = kill_when(resumed, extra, lambda s: s["epoch"] >= 1)
    assert state["batches_done"] == 0 and state["epoch"] == 1  # the resumed run trains epoch 2
    finished = run(resumed, *extra)

    assert not os.path.exists(os.path.join(resumed, "backup"))  # deleted after success
    got, want = history(resumed), history(reference)
    assert got["resumed_after_epoch"] == state["epoch"] and want["resumed_after_epoch"] == 0
    assert [e["epoch"] for e in got["epochs"]] == [1, 2]
    assert got["epochs"] == want["epochs"]          # every epoch's logs, to the last bit
    assert got["test"] == want["test"]
    # The training time of both processes, as the backup carried it over.
    assert got["train_seconds"] > state["train_seconds"] > 0
    assert got["train_seconds_since_epoch"] == want["train_seconds_since_epoch"] == 0
    assert f"in all (resumed after epoch {state['epoch']})" in finished.stdout
    gaps = [float(np.max(np.abs(a - b))) for a, b in zip(weights(resumed), weights(reference))]
    print(f"{method}: resumed after epoch {state['epoch']}, max weight gap {max(gaps)}")
    assert max(gaps) == 0.0


def test_a_run_killed_within_an_epoch_loses_no_finished_epoch(tmp_path, references):
    """Backups every 3 batches (8 per epoch): a backup made within an epoch is resumed
    as Keras resumes it, by restarting that epoch from its first batch with the
    backed-up weights. The batches trained on before the backup are trained on
    again, so the weights are not those of an uninterrupted run: the optimizer
    makes exactly `batches_done` more steps. No finished epoch is lost or redone."""
    reference, resumed = references("pgd-at"), str(tmp_path / "resumed")
    state = kill_when(resumed, ["--backup-every", "3"],
                      lambda s: s["epoch"] >= 1 and s["batches_done"] > 0)
    run(resumed, "--backup-every", "3")

    got, want = history(resumed), history(reference)
    done = state["epoch"]                                  # epochs finished before the kill
    assert got["resumed_after_epoch"] == done
    assert [e["epoch"] for e in got["epochs"]] == [1, 2]
    assert got["epochs"][:done] == want["epochs"][:done]   # kept, not retrained
    steps = {name: int(keras.saving.load_model(os.path.join(out, "model.keras"))
                       .optimizer.iterations.numpy()) for name, out in
             (("resumed", resumed), ("reference", reference))}
    assert steps["reference"] == 2 * 8
    assert steps["resumed"] == 2 * 8 + state["batches_done"]
    gap = max(float(np.max(np.abs(a - b))) for a, b in zip(weights(resumed), weights(reference)))
    print(f"killed in epoch {done + 1} after batch {state['batches_done']}; {steps}; "
          f"max weight gap {gap:.3g}; val_accuracy {got['epochs'][-1]['val_accuracy']} (resumed), "
          f"{want['epochs'][-1]['val_accuracy']} (uninterrupted)")
    assert gap > 0.0
