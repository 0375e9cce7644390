"""Feature scale of trained experiment models: why some ADR runs diverge.

    python experiments/feature_norms.py [NAME-seedS ...]

Loads `experiments/runs/NAME-seedS/model.keras` (all finished MNIST runs by default), feeds
the first 1,000 MNIST test images and records the mean L2 norm of the feature vector the
head (and ADR) reads, its mean absolute entry and the share of exactly-zero (dead ReLU)
entries. Writes experiments/results/feature_norms.json.
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", metavar="NAME-seedS")
    args = parser.parse_args(argv)
    from tfrobust.models import load_model
    from tfrobust.utils.provenance import provenance

    names = args.runs or sorted(
        os.path.basename(os.path.dirname(p))
        for p in glob.glob(os.path.join(RUNS, "mnist_*", "model.keras")))
    with np.load(MNIST) as data:
        images = data["x_test"][:1000, ..., None].astype("float32") / 255.0
    rows = {}
    for name in names:
        model = load_model(os.path.join(RUNS, name, "model.keras"))
        features = np.concatenate([model.features(images[i:i + 250]).numpy()
                                   for i in range(0, len(images), 250)])
        rows[name] = {"mean_l2_norm": float(np.linalg.norm(features, axis=1).mean()),
                      "mean_abs": float(np.abs(features).mean()),
                      "zero_share": float((features == 0).mean())}
        print(f"{name}: mean ||z|| {rows[name]['mean_l2_norm']:.4g}, mean |z_k| "
              f"{rows[name]['mean_abs']:.4g}, zero entries {rows[name]['zero_share']:.2f}",
              flush=True)
    with open(OUTPUT, "w") as handle:
        json.dump({"images": "first 1,000 MNIST test images", "features": rows,
                   **provenance()}, handle, indent=2)
    print(f"wrote {os.path.relpath(OUTPUT, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
