"""Training frameworks side by side: time per epoch, and what it buys in robustness.

    python -m benchmarks.frameworks [--quick]

Trains `small_cnn` on the bundled MNIST sample with every framework (and
PGD-AT in mixed bfloat16), at L-inf epsilon 0.3 with PGD-10 as the training
attack, then measures clean and PGD-20 accuracy on held-out digits. Time is
reported per epoch and as a ratio to PGD-AT measured in the same run.
"""

import argparse
import time

import keras
import numpy as np

import tfrobust
from benchmarks.common import machine, write_json
from tfrobust import attacks, recipe
from tfrobust.models import RobustModel, small_cnn

# Every registered method at its reference hyperparameters, and PGD-AT in mixed bfloat16.
BFLOAT16 = " (mixed_bfloat16)"


def frameworks():
    """Row names: each method of `tfrobust.recipe.methods()`, and PGD-AT in bfloat16."""
    names = list(recipe.methods())
    return names + [f"pgd-at{BFLOAT16}"]


def objective(name):
    method = name.replace(BFLOAT16, "")
    return recipe.build_objective(recipe.resolve(dict(recipe.defaults(), method=method)))


def train_one(name, train, epochs, epsilon):
    policy = "mixed_bfloat16" if name.endswith(BFLOAT16) else "float32"
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        model = RobustModel(small_cnn(), keras.layers.Dense(10, dtype="float32"),
                            objective=objective(name),
                            attack=attacks.PGD(epsilon=epsilon, num_steps=10), eval_attack=False)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        model.fit(train.take(2), epochs=1, verbose=0)  # trace and compile outside the timing
        seconds = []
        for _ in range(epochs):
            start = time.perf_counter()
            model.fit(train, epochs=1, verbose=0)
            seconds.append(time.perf_counter() - start)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return model, seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer examples and epochs")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    examples, epochs, test_n = (2048, 1, 200) if args.quick else (10000, 3, 1000)
    output = args.output or f"benchmarks/results/frameworks{'.quick' if args.quick else ''}.json"
    epsilon = 0.3
    train = tfrobust.data.load("mnist-sample", batch_size=128, limit=examples)
    x_test, y_test = tfrobust.data.load_arrays("mnist-sample", "test", limit=test_n)
    evaluation = attacks.PGD(epsilon=epsilon, num_steps=20, seed=1)
    rows = {}
    for name in frameworks():
        model, seconds = train_one(name, train, epochs, epsilon)
        clean = float(np.mean(np.argmax(model.predict(x_test, verbose=0), -1) == y_test))
        x_adv = np.concatenate([evaluation(model, x_test[i:i + 250], y_test[i:i + 250]).numpy()
                                for i in range(0, len(x_test), 250)])
        robust = float(np.mean(np.argmax(model.predict(x_adv, verbose=0), -1) == y_test))
        rows[name] = {"seconds_per_epoch": seconds, "clean_accuracy": clean,
                      "pgd20_accuracy": robust}
        print(f"{name:26s} {np.median(seconds):7.1f} s/epoch  clean {clean:.3f}  "
              f"PGD-20 {robust:.3f}", flush=True)
    reference = np.median(rows["pgd-at"]["seconds_per_epoch"])
    print(f"\n{'framework':26s} {'s/epoch':>8s} {'x PGD-AT':>9s} {'clean':>6s} {'PGD-20':>7s}")
    for name, row in rows.items():
        median = float(np.median(row["seconds_per_epoch"]))
        row["time_ratio_to_pgd_at"] = median / reference
        print(f"{name:26s} {median:8.1f} {median / reference:9.2f} {row['clean_accuracy']:6.3f} "
              f"{row['pgd20_accuracy']:7.3f}")
    write_json(output, {
        "benchmark": "frameworks", "quick": args.quick, "machine": machine(),
        "setting": {"model": "small_cnn", "epsilon": epsilon, "train_attack": "PGD-10",
                    "examples": examples, "epochs": epochs, "batch_size": 128,
                    "eval": "PGD-20 step 2.5*eps/20", "test_examples": test_n},
        "results": rows,
    })


if __name__ == "__main__":
    main()
