"""tfrobust's attacks against the Adversarial Robustness Toolbox's, side by side in one run.

    python -m benchmarks.attacks [--quick]

PGD-20, APGD-CE (100 steps) and Square (1000 queries), L-inf epsilon 0.3, from
tfrobust and from ART (`pip install tfrobust[bench]`), on the same model, the
same test images and the same batch size. Two models, both `small_cnn` with a
`Dense(10)` head trained on the first 10,000 images of the bundled MNIST
sample with seed 0: standard training for 2 epochs, and PGD-AT (PGD-10) for 3
epochs (`--quick` skips the second). Both are trained by this script on every
run, so the numbers are reproducible from it alone.

Each attack runs once per library on the first batch to trace (the time is
reported as "first call"); then the two libraries alternate over the whole
input set (tfrobust, ART, then ART, tfrobust; Square once each), so that load
drifts on a shared machine hit both. Reported: images
per second (median over repeats), the model's accuracy on the returned
adversarial examples (mean over repeats), and how far any returned point lies
outside the epsilon-ball or [0, 1].
"""

import argparse
import datetime
import statistics
import subprocess
import time

import keras
import numpy as np
import tensorflow as tf

import tfrobust
from benchmarks.common import machine, write_json
from tfrobust import attacks
from tfrobust.models import RobustModel, small_cnn

EPSILON = 0.3
TRAIN_EXAMPLES = 10_000
TRAIN_BATCH = 128


# -- the models --------------------------------------------------------------------------------
def standard_model(epochs=2):
    """small_cnn + Dense(10) as one functional model of logits, standard training."""
    keras.utils.set_random_seed(0)
    backbone = small_cnn()
    model = keras.Model(backbone.input, keras.layers.Dense(10, name="logits")(backbone.output))
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    train = tfrobust.data.load("mnist-sample", batch_size=TRAIN_BATCH, limit=TRAIN_EXAMPLES, seed=0)
    model.fit(train, epochs=epochs, verbose=0)
    return model


def pgd_at_model(epochs=3):
    """The same network trained by RobustModel with PGD-10 at epsilon 0.3.

    Returned as a plain functional model sharing the trained weights, so that
    both libraries see exactly the same callable.
    """
    keras.utils.set_random_seed(0)
    backbone, head = small_cnn(), keras.layers.Dense(10, name="logits")
    robust = RobustModel(backbone, head, attack=attacks.PGD(epsilon=EPSILON, num_steps=10),
                         eval_attack=False)
    robust.compile(optimizer=keras.optimizers.Adam(1e-3))
    train = tfrobust.data.load("mnist-sample", batch_size=TRAIN_BATCH, limit=TRAIN_EXAMPLES, seed=0)
    robust.fit(train, epochs=epochs, verbose=0)
    return keras.Model(backbone.input, head(backbone.output))


def predict_labels(model, x, batch_size):
    return np.concatenate([
        np.argmax(model(x[i:i + batch_size], training=False), axis=-1)
        for i in range(0, len(x), batch_size)
    ])


# -- the attacks, one setting per row ----------------------------------------------------------
def attack_pairs(classifier, batch_size):
    """(name, tfrobust attack, ART attack): the same settings in both vocabularies."""
    from art.attacks.evasion import (AutoProjectedGradientDescent, ProjectedGradientDescent,
                                     SquareAttack)

    pgd_step = 2.5 * EPSILON / 20
    return [
        ("PGD-20",
         attacks.PGD(epsilon=EPSILON, num_steps=20, step_size=pgd_step, num_restarts=1,
                     random_start=True, loss="ce"),
         ProjectedGradientDescent(classifier, norm=np.inf, eps=EPSILON, eps_step=pgd_step,
                                  max_iter=20, num_random_init=1, batch_size=batch_size,
                                  verbose=False)),
        # APGD's first step size is 2 * epsilon (Croce & Hein 2020, Algorithm 1);
        # tfrobust fixes it, ART takes it as eps_step.
        ("APGD-CE-100",
         attacks.get("apgd-ce", epsilon=EPSILON, num_steps=100, num_restarts=1),
         AutoProjectedGradientDescent(classifier, norm=np.inf, eps=EPSILON, eps_step=2 * EPSILON,
                                      max_iter=100, nb_random_init=1, loss_type="cross_entropy",
                                      batch_size=batch_size, verbose=False)),
        # Both maximise the margin loss by default.
        ("Square-1000",
         attacks.Square(epsilon=EPSILON, num_queries=1000, p_init=0.8, num_restarts=1),
         SquareAttack(classifier, norm=np.inf, eps=EPSILON, max_iter=1000, nb_restarts=1,
                      p_init=0.8, batch_size=batch_size, verbose=False)),
    ]


def run_tfrobust(attack, model, x, y, batch_size):
    return np.concatenate([
        attack(model, x[i:i + batch_size], y[i:i + batch_size]).numpy()
        for i in range(0, len(x), batch_size)
    ])


def run_art(attack, x, y):
    # ART batches internally with the attack's batch_size.
    return attack.generate(x=x, y=y)


def _tracing_count(fn):
    """Traces so far of a tf.function (tfrobust keeps `(model, signature, fn)`), None if unknown."""
    if isinstance(fn, tuple):
        fn = fn[-1]
    count = getattr(fn, "experimental_get_tracing_count", None)
    return count() if count is not None else None


def violations(x_adv, x):
    """How far the returned points leave the epsilon-ball and [0, 1] (0 when inside)."""
    linf = float(np.max(np.abs(x_adv.astype(np.float64) - x)))
    return {
        "max_linf": linf,
        "eps_violation": max(0.0, linf - EPSILON),
        "range_violation": max(0.0, float(-x_adv.min()), float(x_adv.max()) - 1.0),
    }


def compare(model_name, model, x, y, batch_size, repeats):
    """Both libraries on every attack for one model; one result dict per attack."""
    from art.estimators.classification import TensorFlowV2Classifier

    # ART's TensorFlow 2 wrapper takes the Keras 3 model as is: it calls
    # model(x, training=...) and differentiates with a GradientTape.
    classifier = TensorFlowV2Classifier(
        model=model, nb_classes=10, input_shape=x.shape[1:],
        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        clip_values=(0.0, 1.0),
    )
    clean_acc = float(np.mean(predict_labels(model, x, batch_size) == y))
    print(f"{model_name}: clean accuracy {clean_acc:.3f} on {len(x)} test images")
    results = []
    for name, ours, theirs in attack_pairs(classifier, batch_size):
        runs = {
            "tfrobust": lambda xs, ys, a=ours: run_tfrobust(a, model, xs, ys, batch_size),
            "art": lambda xs, ys, a=theirs: run_art(a, xs, ys),
        }
        row = {"attack": name, "model": model_name, "clean_accuracy": clean_acc}
        for lib, run in runs.items():
            # Warm-up on 2, then 3 images: the second batch shape makes TensorFlow
            # retrace with a free batch dimension (reduce_retracing), so the timed
            # runs trace nothing; the first call's time is mostly tracing.
            start = time.perf_counter()
            run(x[:2], y[:2])
            first_call = time.perf_counter() - start
            run(x[:3], y[:3])
            row[lib] = {"first_call_seconds": first_call, "seconds": [],
                        "robust_accuracy": [], "violations": []}
        traces = {"tfrobust": lambda a=ours: _tracing_count(getattr(a, "_compiled", None)),
                  "art": lambda a=theirs: _tracing_count(getattr(a.estimator, "_forward_pass",
                                                                 None))}
        traces_before = {lib: count() for lib, count in traces.items()}
        # Square takes minutes per pass over 500 images; one A-then-B pass keeps
        # the full run within ~20 minutes (its repeat times agreed to 2%).
        for r in range(1 if isinstance(ours, attacks.Square) else repeats):
            # A B, then B A: a drift in load over the run costs both alike.
            for lib in (("tfrobust", "art") if r % 2 == 0 else ("art", "tfrobust")):
                start = time.perf_counter()
                x_adv = runs[lib](x, y)
                seconds = time.perf_counter() - start
                row[lib]["seconds"].append(seconds)
                row[lib]["robust_accuracy"].append(
                    float(np.mean(predict_labels(model, x_adv, batch_size) == y)))
                row[lib]["violations"].append(violations(x_adv, x))
        for lib in runs:
            stats = row[lib]
            if traces_before[lib] is not None:
                stats["traces_during_timed_runs"] = traces[lib]() - traces_before[lib]
            stats["images_per_second"] = len(x) / statistics.median(stats["seconds"])
            stats["mean_robust_accuracy"] = statistics.mean(stats["robust_accuracy"])
            stats["max_eps_violation"] = max(v["eps_violation"] for v in stats["violations"])
            stats["max_range_violation"] = max(v["range_violation"] for v in stats["violations"])
        row["speed_ratio"] = row["tfrobust"]["images_per_second"] / row["art"]["images_per_second"]
        print(f"  {name}: tfrobust {row['tfrobust']['images_per_second']:.1f} img/s, "
              f"ART {row['art']['images_per_second']:.1f} img/s", flush=True)
        results.append(row)
    return results


# -- output ------------------------------------------------------------------------------------
def print_table(rows):
    print()
    print("| attack | model | tfrobust img/s | ART img/s | speed ratio | tfrobust robust acc "
          "| ART robust acc |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        ours, theirs = row["tfrobust"], row["art"]
        print(f"| {row['attack']} | {row['model']} | {ours['images_per_second']:.1f} "
              f"| {theirs['images_per_second']:.1f} | {row['speed_ratio']:.2f}x "
              f"| {ours['mean_robust_accuracy']:.3f} | {theirs['mean_robust_accuracy']:.3f} |")
    print()
    print("| attack | model | first call s (tfrobust / ART) | max eps violation (tfrobust / ART) "
          "| max [0,1] violation (tfrobust / ART) |")
    print("|---|---|---|---|---|")
    for row in rows:
        ours, theirs = row["tfrobust"], row["art"]
        print(f"| {row['attack']} | {row['model']} "
              f"| {ours['first_call_seconds']:.1f} / {theirs['first_call_seconds']:.1f} "
              f"| {ours['max_eps_violation']:.1e} / {theirs['max_eps_violation']:.1e} "
              f"| {ours['max_range_violation']:.1e} / {theirs['max_range_violation']:.1e} |")


def git_commit():
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="100 images, standard model only, one repeat")
    parser.add_argument("--output", default=None,
                        help="JSON path (default benchmarks/results/attacks[.quick].json)")
    args = parser.parse_args(argv)
    try:
        import art
    except ImportError as error:
        raise SystemExit("This benchmark needs ART: pip install 'tfrobust[bench]'") from error

    # The warm-up retraces on purpose (see `compare`); TensorFlow would warn about it.
    tf.get_logger().setLevel("ERROR")
    examples, repeats = (100, 1) if args.quick else (500, 2)
    batch_size = 250
    output = args.output or ("benchmarks/results/attacks.quick.json" if args.quick
                             else "benchmarks/results/attacks.json")
    commit = git_commit()  # at the start: the code that is measured
    x, y = tfrobust.data.load_arrays("mnist-sample", "test", limit=examples)
    np.random.seed(0)  # ART draws its random starts and squares from NumPy's global state

    trained, train_seconds = {}, {}
    builders = [("standard", standard_model)] + ([] if args.quick else [("PGD-AT", pgd_at_model)])
    for name, build in builders:
        start = time.perf_counter()
        trained[name] = build()
        train_seconds[name] = time.perf_counter() - start
        print(f"trained {name} model in {train_seconds[name]:.0f} s", flush=True)

    rows = []
    for name, model in trained.items():
        rows += compare(name, model, x, y, batch_size, repeats)
    print_table(rows)
    write_json(output, {
        "benchmark": "attacks", "quick": args.quick,
        "date": datetime.date.today().isoformat(), "machine": machine(),
        "versions": {"tfrobust": tfrobust.__version__, "art": art.__version__,
                     "tensorflow": tf.__version__, "keras": keras.__version__,
                     "numpy": np.__version__, "git_commit": commit},
        "setting": {"epsilon": EPSILON, "norm": "linf", "examples": examples,
                    "batch_size": batch_size, "repeats": repeats, "square_repeats": 1,
                    "data": "mnist-sample test[:examples]",
                    "train": {"examples": TRAIN_EXAMPLES, "batch_size": TRAIN_BATCH, "seed": 0,
                              "standard_epochs": 2, "pgd_at_epochs": 3,
                              "pgd_at_attack": "PGD-10, eps 0.3, step 2.5*eps/10"},
                    "jit_compile": "tfrobust default ('auto')"},
        "train_seconds": train_seconds,
        "results": rows,
    })


if __name__ == "__main__":
    main()
