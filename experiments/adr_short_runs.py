"""Short runs on the bundled MNIST sample: which small_cnn initialisation lets ADR train.

    python experiments/adr_short_runs.py [--updates 237]

Each variant trains small_cnn (dropout 0.5 unless said) from `tfrobust train`'s own model
builder for the same updates of batch 128 on the bundled sample's first 10,000 digits
(PGD-5 at L-inf 0.3, step 0.1), then measures clean and PGD-10 accuracy on 500 test digits
and records the last local compactness and the mean L1 size of ADR's latent. Variants:
PGD-AT and ADR (reference weights, reference latent) with each initialisation under Adam
1e-3, ADR without dropout, and ADR with the ADR PyTorch reference's optimiser (SGD 0.01,
momentum 0.9; its base loss CE(x) + CE(x') with every term at weight 1, which is tfrobust's
0.5 CE(x) + 0.5 CE(x') with every term at 0.5 under twice the learning rate). Writes
experiments/results/adr_short_runs.json.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUT = os.path.join(ROOT, "experiments", "results", "adr_short_runs.json")
# name: (objective, initialization, dropout, optimizer)
VARIANTS = {
    "pgd-at, keras": ("pgd-at", "keras", 0.5, "adam"),
    "pgd-at, reference": ("pgd-at", "reference", 0.5, "adam"),
    "adr, keras": ("adr", "keras", 0.5, "adam"),
    "adr, keras, no dropout": ("adr", "keras", 0.0, "adam"),
    "adr, reference": ("adr", "reference", 0.5, "adam"),
    "adr, reference, reference SGD": ("adr", "reference", 0.5, "sgd"),
}


def run_variant(objective, initialization, dropout, optimizer, updates, data):
    import keras
    import tensorflow as tf

    from tfrobust import attacks, recipe
    from tfrobust.objectives import regularizers
    from tfrobust import data as data_lib

    x, y, x_test, y_test = data
    keras.utils.set_random_seed(0)
    options = dict(recipe.defaults(), method="pgd-at", adr=objective == "adr", num_steps=5,
                   step_size=0.1, initialization=initialization, dropout=dropout)
    if objective == "adr" and optimizer == "sgd":
        options["adr_weights"] = {k: 0.5 for k in regularizers.short_names()}
    info = data_lib.DatasetInfo("mnist-sample", (28, 28, 1), 10, "arrays")
    model = recipe.build_model(recipe.resolve(options), info)
    if optimizer == "sgd":
        model.compile(optimizer=keras.optimizers.SGD(0.02, momentum=0.9))
    batches = (len(x) + 127) // 128
    epochs, rest = divmod(updates, batches)
    started = time.perf_counter()
    history = model.fit(x, y, batch_size=128, epochs=max(epochs, 1), verbose=0).history
    x_adv = attacks.PGD(epsilon=0.3, num_steps=10, step_size=0.075).perturb(
        model, x_test, y_test, tf.constant([1, 2]))
    latent = keras.Model(model.backbone.inputs,
                         model.backbone.get_layer("flatten").output)(x_test[:256]).numpy()
    return {
        "updates": int(model.optimizer.iterations.numpy()),
        "clean": float(np.mean(np.argmax(model.predict(x_test, verbose=0), -1) == y_test)),
        "pgd10": float(np.mean(np.argmax(model.predict(x_adv, verbose=0), -1) == y_test)),
        "local_compactness": (float(history["local_compactness"][-1])
                              if "local_compactness" in history else None),
        "latent_mean_abs": float(np.mean(np.abs(latent))),
        "latent_zero_share": float(np.mean(latent == 0)),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=237,
                        help="optimizer updates, a whole number of passes over 10,000 digits "
                             "(79 batches each; default 237 = 3 passes)")
    parser.add_argument("--output", default=OUTPUT)
    args = parser.parse_args(argv)
    from tfrobust import data as data_lib
    from tfrobust.utils.provenance import provenance

    x, y = data_lib.load_arrays("mnist-sample", split="train")
    x_test, y_test = data_lib.load_arrays("mnist-sample", split="test")
    data = (x[:10000], y[:10000], x_test[:500], y_test[:500].astype("int32"))
    rows = {}
    for name, variant in VARIANTS.items():
        rows[name] = run_variant(*variant, args.updates, data)
        print(name, rows[name], flush=True)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump({"command": "python experiments/adr_short_runs.py --updates "
                   f"{args.updates}", "variants": {n: dict(zip(
                       ("objective", "initialization", "dropout", "optimizer"), v))
                       for n, v in VARIANTS.items()},
                   "results": rows, **provenance()}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
