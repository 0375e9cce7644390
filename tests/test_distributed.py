"""Two worker processes on 127.0.0.1 train together under MultiWorkerMirroredStrategy."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from tfrobust import data
from tfrobust.utils import distribution

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "scripts", "multi_worker_equivalence.py")
TIMEOUT = 300
CASES = ["pgd-at", "pgd-at-he-adr", "trades-he-adr"]


def free_ports(count):
    """Ports the OS had free a moment ago (sockets bound to port 0, then closed)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_config(ports, index):
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def run_workers(argv, logs, count=2):
    """Run `argv` once per worker with its TF_CONFIG; kill them all if one fails or hangs."""
    ports = free_ports(count)
    processes = []
    try:
        for index in range(count):
            log = open(os.path.join(logs, f"worker-{index}.log"), "w")
            env = dict(os.environ, TF_CONFIG=tf_config(ports, index))
            processes.append((subprocess.Popen(argv, env=env, stdout=log,
                                               stderr=subprocess.STDOUT), log))
        for process, _ in processes:
            process.wait(timeout=TIMEOUT)
    finally:
        for process, log in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()
    for index, (process, _) in enumerate(processes):
        with open(os.path.join(logs, f"worker-{index}.log")) as handle:
            assert process.returncode == 0, handle.read()[-3000:]


def weights(path):
    with np.load(path) as arrays:
        return [arrays[k] for k in sorted((k for k in arrays.files if k.startswith("arr_")),
                                          key=lambda k: int(k[4:]))], float(arrays["moved"])


def test_two_workers_train_exactly_as_one_process_on_the_same_global_batches(tmp_path):
    multi, single = tmp_path / "multi", tmp_path / "single"
    multi.mkdir()
    single.mkdir()
    run_workers([sys.executable, SCRIPT, "worker", str(multi), *CASES], str(tmp_path))
    result = subprocess.run([sys.executable, SCRIPT, "single", str(single), *CASES],
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(multi)) == sorted(f"{c}.npz" for c in CASES)  # the chief only
    for case in CASES:
        with np.load(multi / f"{case}.npz") as arrays:
            assert int(arrays["replicas"]) == 2
        got, moved = weights(multi / f"{case}.npz")
        want, _ = weights(single / f"{case}.npz")
        gap = max(float(np.max(np.abs(a - b))) for a, b in zip(got, want))
        print(f"{case}: max |w_2 workers - w_1 process| = {gap:.3g}, training moved {moved:.3g}")
        assert moved > 1e-2, case      # training changed the weights
        assert gap < 1e-5, (case, gap)


def start_workers(argv, logs, count=2):
    """Start `argv` once per worker with its TF_CONFIG; returns the processes."""
    ports = free_ports(count)
    return [subprocess.Popen(argv, env=dict(os.environ, TF_CONFIG=tf_config(ports, index)),
                             stdout=open(os.path.join(logs, f"killed-{index}.log"), "w"),
                             stderr=subprocess.STDOUT)
            for index in range(count)]


def test_tfrobust_train_multi_worker_killed_mid_epoch_resumes_and_writes_once(tmp_path):
    """Two workers back up every batch; both are SIGKILLed in the middle of epoch 2, and
    the same command on both resumes from the chief's backup, finishes, and the chief
    writes the artefacts once."""
    from tfrobust import backup as backup_lib

    out = tmp_path / "run"
    argv = [sys.executable, "-m", "tfrobust.cli.main", "train", "--distribute",
            "multi-worker", "--limit", "256", "--epochs", "3", "--batch-size", "64",
            "--num-steps", "2", "--eval-num-steps", "2", "--val-limit", "64",
            "--eval-limit", "64", "--backup-every", "1", "--output", str(out)]
    processes = start_workers(argv, str(tmp_path))
    state, deadline = None, time.time() + TIMEOUT
    try:
        while time.time() < deadline and all(p.poll() is None for p in processes):
            state = backup_lib.read_state(str(out / "backup"))
            if state is not None and state["epoch"] >= 1 and state["batches_done"] >= 1:
                break
            time.sleep(0.02)
    finally:
        for process in processes:
            process.send_signal(signal.SIGKILL)
            process.wait()
    assert [p.returncode for p in processes] == [-signal.SIGKILL] * 2, (
        tmp_path / "killed-0.log").read_text()[-3000:]
    assert state["epoch"] == 1 and 1 <= state["batches_done"] < 4
    assert not (out / "model.keras").exists()

    run_workers(argv, str(tmp_path))
    # Worker 0, the chief, wrote the artefacts; the backups of both are gone.
    assert sorted(os.listdir(out)) == ["config.json", "history.json", "model.keras"]
    config = json.loads((out / "config.json").read_text())
    assert config["options"]["distribute"] == "multi-worker"
    history = json.loads((out / "history.json").read_text())
    assert history["resumed_after_epoch"] == 1
    assert [e["epoch"] for e in history["epochs"]] == [1, 2, 3]
    # The test split (64 images) was shared by the workers; the saved model
    # reproduces the accuracy they reported together.
    model = keras.saving.load_model(out / "model.keras")
    x, y = data.load_arrays("mnist-sample", "test", limit=64)
    accuracy = float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))
    assert accuracy == pytest.approx(history["test"]["accuracy"], abs=1e-6)
    # Each batch of epochs 2 and 3 ran once after the resume, on both workers together.
    assert int(model.optimizer.iterations.numpy()) == 3 * 4 + state["batches_done"]
    logs = [(tmp_path / f"worker-{i}.log").read_text() for i in range(2)]
    assert all("resuming after epoch 1" in log and "Test accuracy: clean" in log
               for log in logs)


def test_every_worker_restores_the_chiefs_backup_when_it_sees_one(tmp_path):
    """A kill can fall between the chief's backup and a worker's: resuming each from its
    own would start them at different steps, so a worker restores the chief's."""
    from tfrobust.backup import STATE_FILE
    from tfrobust.cli import resume

    chief, worker = distribution.ClusterTask("worker", 0, 2, True), distribution.ClusterTask(
        "worker", 1, 2, False)
    out = str(tmp_path)
    assert resume.restore_dir(out, worker) == os.path.join(out, "backup-worker-1")
    os.makedirs(os.path.join(out, "backup"))
    with open(os.path.join(out, "backup", STATE_FILE), "w") as handle:
        json.dump({"epoch": 1, "weights": "w.h5", "history": []}, handle)
    assert resume.restore_dir(out, worker) == os.path.join(out, "backup")
    assert resume.restore_dir(out, chief) == resume.backup_dir(out, chief) == os.path.join(
        out, "backup")


@pytest.mark.parametrize("environ,task", [
    ({}, ("worker", 0, 1, True)),
    ({"TF_CONFIG": tf_config([1, 2], 1)}, ("worker", 1, 2, False)),
    ({"TF_CONFIG": json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:2"]},
                               "task": {"type": "worker", "index": 0}})}, ("worker", 0, 2, False)),
    ({"TF_CONFIG": json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:2"]},
                               "task": {"type": "chief", "index": 0}})}, ("chief", 0, 2, True)),
])
def test_the_chief_is_the_chief_task_or_worker_0(environ, task):
    found = distribution.cluster_task(environ)
    assert (found.type, found.index, found.num_workers, found.is_chief) == task


def test_evaluation_splits_each_attack_batch_over_two_logical_cpus():
    """Under MirroredStrategy the model's passes run on both devices, and the report is the
    one device's, example by example (tests/scripts/mirrored_evaluation.py)."""
    result = subprocess.run([sys.executable, os.path.join(HERE, "scripts",
                                                          "mirrored_evaluation.py")],
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert [d[-5:] for d in found["devices"]] == ["CPU:0", "CPU:1"]
    assert found["max_point_difference"] == 0.0
    one, two = found["broken_by"]
    assert one == two and "apgd-ce" in one and "robust" in one
    assert found["robust_accuracy"][0] == found["robust_accuracy"][1]
    assert found["clean_accuracy"][0] == found["clean_accuracy"][1] > 0.5
    assert found["checks"][0] == found["checks"][1]
