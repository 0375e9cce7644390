"""Feature scale of trained experiment models: what ADR's latent did.

    python experiments/feature_norms.py [NAME-seedS ...] [--runs DIR] [--output FILE]

Loads `experiments/runs/NAME-seedS/model.keras` (all finished MNIST runs by default), feeds
the first 1,000 MNIST test images and records, for the feature vector the head reads and
for the small_cnn latent ADR reads at its reference (`flatten`), the mean L2 norm, the mean
absolute entry and the share of exactly-zero (dead ReLU) entries, and for ADR models which
layer they regularised. Writes experiments/results/feature_norms.json.
"""

import argparse
import glob
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = os.path.join(ROOT, "experiments", "runs")
OUTPUT = os.path.join(ROOT, "experiments", "results", "feature_norms.json")
MNIST = os.path.join(ROOT, "..", "shared", "data", "mnist.npz")


def _stats(function, images):
    values = np.concatenate([np.asarray(function(images[i:i + 250]))
                             for i in range(0, len(images), 250)])
    return {"mean_l2_norm": float(np.linalg.norm(values, axis=1).mean()),
            "mean_abs": float(np.abs(values).mean()),
            "zero_share": float((values == 0).mean())}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", metavar="NAME-seedS")
    parser.add_argument("--runs-dir", default=RUNS, help="where the runs are (a worktree's)")
    parser.add_argument("--output", default=OUTPUT)
    args = parser.parse_args(argv)
    runs_dir = args.runs_dir
    from tfrobust.models import load_model
    from tfrobust.utils.provenance import provenance

    names = args.runs or sorted(
        os.path.basename(os.path.dirname(p))
        for p in glob.glob(os.path.join(runs_dir, "mnist_*", "model.keras")))
    with np.load(MNIST) as data:
        images = data["x_test"][:1000, ..., None].astype("float32") / 255.0
    rows = {}
    for name in names:
        import keras

        model = load_model(os.path.join(runs_dir, name, "model.keras"))
        latent = keras.Model(model.backbone.inputs, model.backbone.get_layer("flatten").output)
        rows[name] = {"adr_layer": getattr(model.objective, "layer", None),
                      "features": _stats(model.features, images),
                      "flatten": _stats(latent, images)}
        print(f"{name}: {rows[name]}", flush=True)
    with open(args.output, "w") as handle:
        json.dump({"images": "first 1,000 MNIST test images", "runs": rows,
                   **provenance()}, handle, indent=2)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
