"""ADR's ablation on the bundled MNIST sample: PGD-AT, each ADR term alone, all of ADR.

    python experiments/adr_ablation_mnist_sample.py [--epochs 3] [--test 200]

Every row trains `small_cnn` with `tfrobust train` (PGD-10, L-inf 0.3, Adam 1e-3,
batch 128, the 10,000 training images, the same epochs and seed) and is evaluated on
the first `--test` test images with PGD-20 and with the standard AutoAttack ensemble
(APGD-CE, APGD-T, FAB-T, Square 5000). ADR's rows use its PGD-AT total
(0.5 clean CE + 0.5 adversarial CE + terms). Writes
experiments/results/adr_ablation_mnist_sample.json.
"""

import argparse
import json
import os
import time

import keras
import numpy as np

from tfrobust import attacks, data
from tfrobust.cli.config import provenance
from tfrobust.cli.main import main as cli

ROWS = {
    "pgd-at": [],
    "+local compactness": ["--adr", "--adr-weights", "lc=1,gc=0,ls=0,gs=0,ce=0"],
    "+global compactness": ["--adr", "--adr-weights", "lc=0,gc=1,ls=0,gs=0,ce=0"],
    "+local smoothness": ["--adr", "--adr-weights", "lc=0,gc=0,ls=1,gs=0,ce=0"],
    "+conditional entropy": ["--adr", "--adr-weights", "lc=0,gc=0,ls=0,gs=0,ce=1"],
    "adr (all)": ["--adr"],
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", nargs="+", default=list(ROWS))
    parser.add_argument("--runs", default="experiments/runs")
    parser.add_argument("--output", default="experiments/results/adr_ablation_mnist_sample.json")
    args = parser.parse_args(argv)
    x, y = data.load_arrays("mnist-sample", "test", limit=args.test)
    results = []
    for name in args.rows:
        out = os.path.join(args.runs, "adr-" + name.strip("+").replace(" ", "-")
                           .replace("(", "").replace(")", ""))
        command = ["train", *ROWS[name], "--epochs", str(args.epochs), "--seed", str(args.seed),
                   "--output", out, "--overwrite"]
        start = time.perf_counter()
        assert cli(command) == 0
        train_seconds = time.perf_counter() - start
        model = keras.saving.load_model(os.path.join(out, "model.keras"))
        pgd = attacks.PGD(epsilon=0.3, num_steps=20, seed=11)(model, x, y).numpy()
        pgd_acc = float(np.mean(np.argmax(model.predict(pgd, verbose=0), -1) == y))
        start = time.perf_counter()
        result = attacks.AutoAttack(epsilon=0.3, seed=12).run(model, x, y, batch_size=200,
                                                              verbose=False)
        row = {"row": name, "command": "tfrobust " + " ".join(command),
               "train_and_test_seconds": round(train_seconds, 1),
               "clean": result.clean_accuracy, "pgd20": pgd_acc,
               "autoattack": result.robust_accuracy,
               "autoattack_after": dict(zip(result.attack_names, result.robust_accuracy_after)),
               "autoattack_seconds": round(time.perf_counter() - start, 1)}
        print(json.dumps(row), flush=True)
        results.append(row)
        os.makedirs(os.path.dirname(args.output), exist_ok=True)
        with open(args.output, "w") as handle:  # rewritten after every row: partial runs count
            json.dump({"experiment": "adr_ablation_mnist_sample", "epochs": args.epochs,
                       "seed": args.seed, "test_examples": int(len(y)), "epsilon": 0.3,
                       "rows": results, **provenance()}, handle, indent=2)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
