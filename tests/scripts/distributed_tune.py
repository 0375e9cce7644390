"""One process of a distributed keras-tuner search over `RobustHyperModel` (chief or worker).

Run as `python distributed_tune.py DIR` in every process, with keras-tuner's
environment: `KERASTUNER_TUNER_ID` ("chief", "tuner0", "tuner1", ...),
`KERASTUNER_ORACLE_IP` and `KERASTUNER_ORACLE_PORT`. The chief serves the
oracle and, when every worker is done, writes DIR/results.json; each worker
appends the ids of the trials it ran to DIR/ran-<tuner id>.txt.

Workers wait (up to a minute) until every worker has started before asking for
trials, so that one fast worker cannot take every trial while another is
still importing TensorFlow: the test is about trials spreading, not start-up races.
"""

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfrobust import data, tuning  # noqa: E402

WORKERS = ("tuner0", "tuner1")
MAX_TRIALS = 4


def main(directory):
    tuner_id = os.environ["KERASTUNER_TUNER_ID"]
    hypermodel = tuning.RobustHyperModel(
        (28, 28, 1), 10, fixed={"method": "pgd-at", "adr": False, "head": "dense"},
        search_defaults=False, search={"learning_rate": [3e-4, 3e-3]},
        num_steps=2, eval_num_steps=2, seed=0)
    tuner = tuning.build_tuner(hypermodel, "random", "val_adv_accuracy", MAX_TRIALS,
                               directory=directory, project_name="search", seed=0)
    train = data.load("mnist-sample", "train", batch_size=64, limit=256)
    val = data.load("mnist-sample", "test", batch_size=64, limit=64)
    if tuning.search.distributed_role() == "worker":
        _wait_for_all_workers(directory, tuner_id)
        end_trial = tuner.on_trial_end

        def on_trial_end(trial):
            with open(os.path.join(directory, f"ran-{tuner_id}.txt"), "a") as handle:
                handle.write(f"{trial.trial_id}\n")
            end_trial(trial)

        tuner.on_trial_end = on_trial_end
    tuner.search(train, validation_data=val, epochs=1, verbose=0)  # the chief serves here
    if tuning.search.distributed_role() == "chief":
        with open(os.path.join(directory, "results.json"), "w") as handle:
            json.dump(tuning.results(tuner), handle)


def _wait_for_all_workers(directory, tuner_id, timeout=60.0):
    open(os.path.join(directory, f"started-{tuner_id}"), "w").close()
    deadline = time.time() + timeout
    while time.time() < deadline:
        if all(os.path.exists(os.path.join(directory, f"started-{w}")) for w in WORKERS):
            return
        time.sleep(0.2)


if __name__ == "__main__":
    main(sys.argv[1])
