"""Train RobustModels in one process, or in several under MultiWorkerMirroredStrategy.

`python multi_worker_equivalence.py single OUT_DIR CASE [CASE ...]` trains on one
device; `python multi_worker_equivalence.py worker OUT_DIR CASE [CASE ...]`, started
once per worker with `TF_CONFIG` set, trains under
`tf.distribute.MultiWorkerMirroredStrategy` (ring collectives), built by
`tfrobust.utils.distribution.strategy("multi-worker")` as `tfrobust train` builds it. Both see
the same global batches (128 bundled training digits in batches of 32, in order, each
worker keeping its share: the DATA auto-shard policy); the chief (worker 0)
writes the final weights of each case to OUT_DIR/CASE.npz, with `moved`, how
far training took them from the initial weights.

The inner attacks are deterministic (no random starts): each replica draws the
random start of its own slice from its own stream, which cannot reproduce a
single process's draw (see tests/scripts/mirrored_equivalence.py).
- "pgd-at": small conv net, dense head, PGD-AT with PGD-3.
- "pgd-at-he-adr": a `HypersphereDense` head, ADR on PGD-AT (PGD-3) with the
  per-example regularisers: local compactness, local smoothness, conditional
  entropy.
- "trades-he-adr": the same head and regularisers on TRADES. TRADES' attack
  maximises a KL that is at its minimum at x: without the Gaussian start its
  gradient there is round-off, whose sign (a full L-inf step) differs with the
  batch split, so here the attack takes no steps and the case checks the
  TRADES + HE + ADR loss and its gradient across workers, not the attack.
Global compactness pairs the examples of a replica's share of the batch, so it
is left out: it is not meant to equal the single-process value.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfrobust import attacks, data, objectives  # noqa: E402
from tfrobust.layers import HypersphereDense  # noqa: E402
from tfrobust.models import RobustModel  # noqa: E402
from tfrobust.utils import distribution  # noqa: E402

GLOBAL_BATCH = 32
EXAMPLES = 128
CASES = ("pgd-at", "pgd-at-he-adr", "trades-he-adr")


def build(case):
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential([
        keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 5, strides=2, activation="relu"),
        keras.layers.Flatten(), keras.layers.Dense(16, activation="relu"),
    ])
    attack = attacks.PGD(epsilon=0.3, num_steps=0 if case.startswith("trades") else 3,
                         step_size=0.1, random_start=False)
    regs = [objectives.regularizers.LocalCompactness(1.0),
            objectives.regularizers.LocalSmoothness(1.0),
            objectives.regularizers.ConditionalEntropy(1.0)]
    if case == "pgd-at":
        model = RobustModel(backbone, keras.layers.Dense(10), objective=objectives.PGDAT(),
                            attack=attack, eval_attack=False)
    elif case in ("pgd-at-he-adr", "trades-he-adr"):
        objective = (objectives.PGDAT() if case == "pgd-at-he-adr"
                     else objectives.TRADES(beta=6.0, init_std=0.0))
        model = RobustModel(backbone, HypersphereDense(10, scale=15.0, margin=0.2),
                            objective=objective, regularizers=regs, attack=attack,
                            eval_attack=False)
    else:
        raise ValueError(f"Expected a case in {CASES}. Received: case={case!r}")
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), jit_compile=False)
    return model


def global_batches():
    x, y = data.load_arrays("mnist-sample", "train", limit=EXAMPLES)
    # Every worker builds the same global batches and keeps its share of each, as
    # `tfrobust train --distribute multi-worker` does.
    return distribution.shard_by_data(
        tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH))


def main():
    mode, out_dir, cases = sys.argv[1], sys.argv[2], sys.argv[3:]
    strategy = distribution.strategy("multi-worker" if mode == "worker" else "none")
    is_chief = distribution.cluster_task().is_chief
    for case in cases:
        with strategy.scope():
            model = build(case)
        initial = [w.copy() for w in model.get_weights()]
        history = model.fit(global_batches(), epochs=1, verbose=0)
        weights = model.get_weights()
        moved = max(float(np.max(np.abs(a - b))) for a, b in zip(weights, initial))
        if is_chief:
            np.savez(os.path.join(out_dir, f"{case}.npz"), *weights, moved=moved,
                     replicas=strategy.num_replicas_in_sync, loss=history.history["loss"][-1])
        print(json.dumps({"mode": mode, "case": case, "replicas": strategy.num_replicas_in_sync,
                          "moved": moved, "loss": history.history["loss"][-1]}), flush=True)


if __name__ == "__main__":
    main()
