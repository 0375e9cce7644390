"""What `tfrobust evaluate` costs against what its attacks' algorithms need.

    python -m benchmarks.evaluation floors --model M.keras [--report R.json] [--examples 32]
    python -m benchmarks.evaluation old-new --model M.keras --old-commit C [--limit 500]
        [--new-args '--precision mixed_bfloat16']
    python -m benchmarks.evaluation precision --model M.keras [--indices 45,200,403] [--seeds 4]
    python -m benchmarks.evaluation first-calls --model M.keras

`floors`: each attack of the standard ensemble on the same examples, against
its floor: the passes its algorithm needs per example, times the model's
pass time measured alone on the same batch. Passes per example:

- APGD-CE: (steps + 1) forward-and-backward passes per restart (the
  reference takes a gradient at the start point and after each step);
- APGD-T: that for each of the 9 target classes, plus one forward pass for
  the targets;
- FAB-T: per target class, steps x (one gradient of `z_t - z_y` and one
  forward pass to see whether the point is adversarial), plus one forward
  pass for the targets;
- Square: the queries it made (`perturb_and_count`), forward passes.

On the PGD-AT `small_cnn` (`--model`), the examples are ones the ensemble
left robust in an earlier report (`--report`: a report.json whose
`broken_by` marks them), so every attack spends its whole budget, as on the
points that dominate an evaluation's time. On `preact_resnet18` (random
weights, CIFAR-10 test images, `--resnet-examples`), the attacks run with a
tenth of their steps and queries (the ratio to the floor is per pass). Each
attack runs twice on the same inputs and seed; the second run is timed (the
first traces).

`old-new`: the whole standard report (`tfrobust evaluate MODEL --limit N`) by
the code of `--old-commit` (a git worktree made for it) and by this checkout,
as two processes started together, one thread each, so that the machine's load
hits both alike; `--new-args` adds options to the new run only. Reported: each
one's wall time and the report's own timings, robust and clean accuracy, the
breaks per attack, the sweep curves, how many examples only one of the two
left robust, and old / new.

`precision`: the pass times of the model and of its bfloat16 copy
(`--precision mixed_bfloat16`), measured alternately in one process, and how
many of `--seeds` runs of APGD-T and Square-5000 break each of the test images
`--indices` in each precision, every break judged by the float32 model.

`first-calls`: the first call (tracing included) and a second call of APGD-CE,
APGD-T, FAB-T, PGD-20 and PGD-20x5, stopping when fooled, on 2 test images.

Writes `benchmarks/results/evaluation.<mode>.json`.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks.common import machine, write_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- floors ----------------------------------------------------------------------------------
def pass_times(logits_fn, x, y, repeats=20):
    """Seconds per example of one forward pass and of one forward-and-backward pass on
    the batch `x` (fastest of `repeats` after a warm-up)."""
    import tensorflow as tf

    @tf.function
    def forward(images):
        return logits_fn(images)

    @tf.function
    def gradient(images, labels):
        with tf.GradientTape() as tape:
            tape.watch(images)
            logits = logits_fn(images)
            loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        return tape.gradient(loss, images)

    x, y = tf.constant(x), tf.constant(y)
    times = {}
    for name, call in (("forward", lambda: forward(x)), ("gradient", lambda: gradient(x, y))):
        call().numpy()
        best = np.inf
        for _ in range(repeats):
            start = time.perf_counter()
            call().numpy()
            best = min(best, time.perf_counter() - start)
        times[name] = best / len(y)
    return times


def floor_passes(attack, queries=None):
    """(gradient passes, forward passes) per example the attack's algorithm needs."""
    from tfrobust import attacks

    if isinstance(attack, attacks.Square):
        return 0, float(np.mean(queries))
    if isinstance(attack, attacks.FAB):
        targets = attack.num_target_classes * attack.num_restarts
        return targets * attack.num_steps, targets * attack.num_steps + 1
    if isinstance(attack, attacks.APGDTargeted):
        runs = attack.num_target_classes * attack.num_restarts
        return runs * (attack.num_steps + 1), 1
    if isinstance(attack, attacks.APGD):
        return attack.num_restarts * (attack.num_steps + 1), 0
    raise ValueError(f"Expected an attack of the standard ensemble. Received: {attack!r}")


def measure_floors(logits_fn, x, y, members):
    """One row per attack: measured seconds, floor seconds and their ratio."""
    import tensorflow as tf

    times = pass_times(logits_fn, x, y)
    rows = []
    for attack in members:
        seed = tf.constant([0, 0], tf.int32)
        queries = None
        if hasattr(attack, "perturb_and_count"):
            fn = tf.function(lambda a, b, s, attack=attack: attack.perturb_and_count(
                logits_fn, a, b, s))
        else:
            fn = tf.function(lambda a, b, s, attack=attack: (attack.perturb(logits_fn, a, b, s),
                                                             tf.zeros([0], tf.int32)))
        args = (tf.constant(x), tf.constant(y), seed)
        first = time.perf_counter()
        fn(*args)[0].numpy()
        first = time.perf_counter() - first
        start = time.perf_counter()
        x_adv, counted = fn(*args)
        x_adv = x_adv.numpy()
        seconds = time.perf_counter() - start
        if counted.shape[0]:
            queries = counted.numpy()
        gradients, forwards = floor_passes(attack, queries)
        floor = len(y) * (gradients * times["gradient"] + forwards * times["forward"])
        fooled = np.argmax(logits_fn(x_adv).numpy(), -1) != y
        rows.append({"attack": _label(attack), "examples": int(len(y)),
                     "gradient_passes": gradients, "forward_passes": forwards,
                     "seconds": seconds, "first_call_seconds": first, "floor_seconds": floor,
                     "ratio": seconds / floor, "broken": int(fooled.sum())})
        print(f"  {rows[-1]['attack']:<12} {seconds:8.2f} s  floor {floor:8.2f} s  "
              f"ratio {seconds / floor:.2f}  ({gradients} gradient + {forwards:.0f} forward "
              f"passes per example; broke {fooled.sum()} of {len(y)})", flush=True)
    return {"seconds_per_example": times, "attacks": rows}


def _label(attack):
    from tfrobust.evaluation.inputs import label

    return label(attack)


def _standard(epsilon, fraction=1):
    """The standard ensemble's four attacks, with `1 / fraction` of their steps and queries."""
    from tfrobust import attacks

    common = {"epsilon": epsilon, "norm": "linf"}
    return [attacks.APGDCE(num_steps=100 // fraction, **common),
            attacks.APGDTargeted(num_steps=100 // fraction, **common),
            attacks.FAB(num_steps=100 // fraction, **common),
            attacks.Square(num_queries=5000 // fraction, **common)]


def floors(args):
    import keras

    from tfrobust.evaluation import inputs
    from tfrobust.models import get_backbone

    results = {}
    model = keras.models.load_model(args.model)
    logits_fn = inputs.evaluation_logits(model)
    x, y, _ = inputs.resolve_data(args.data, "test", None, 0.0, 1.0)
    if args.report:
        with open(args.report) as handle:
            broken_by = json.load(handle)["broken_by"]
        robust = [i for i, b in enumerate(broken_by) if b == "robust"][:args.examples]
    else:
        robust = list(range(args.examples))
    print(f"small_cnn (PGD-AT, {args.model}), {len(robust)} examples the ensemble left robust:")
    results["small_cnn"] = measure_floors(logits_fn, x[robust], y[robust],
                                          _standard(args.epsilon))
    if args.resnet_examples:
        keras.utils.set_random_seed(0)
        resnet = keras.Sequential([get_backbone("preact_resnet18", (32, 32, 3)),
                                   keras.layers.Dense(10)])
        cx, cy, _ = inputs.resolve_data(args.cifar, "test", args.resnet_examples, 0.0, 1.0)
        print(f"preact_resnet18 (random weights), {len(cy)} CIFAR-10 test images, a tenth of "
              "the steps and queries:")
        results["preact_resnet18"] = measure_floors(resnet, cx, cy, _standard(8 / 255, 10))
    return results


# -- old against new -------------------------------------------------------------------------
def old_new(args):
    old_path = args.old_path
    if old_path is None:
        old_path = tempfile.mkdtemp(prefix="tfrobust-old-")
        subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", old_path,
                        args.old_commit], check=True)
    commit = subprocess.run(["git", "-C", old_path, "rev-parse", "HEAD"], check=True,
                            capture_output=True, text=True).stdout.strip()
    new_commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], check=True,
                                capture_output=True, text=True).stdout.strip()
    out = tempfile.mkdtemp(prefix="tfrobust-old-new-")
    env = dict(os.environ, TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1",
               TF_CPP_MIN_LOG_LEVEL="2")
    runs = {}
    for name, path in (("old", old_path), ("new", ROOT)):
        report = os.path.join(out, name)
        command = [sys.executable, "-m", "tfrobust", "evaluate", os.path.abspath(args.model),
                   "--data", os.path.abspath(args.data), "--limit", str(args.limit),
                   "--report", report, "--quiet"]
        if name == "new":
            command += args.new_args.split()
        log = open(os.path.join(out, f"{name}.log"), "w")
        runs[name] = (subprocess.Popen(command, cwd=path, env=dict(env, PYTHONPATH=path),
                                       stdout=log, stderr=subprocess.STDOUT),
                      time.perf_counter(), report, command)
        print(f"{name}: {' '.join(command)} (in {path}; log {log.name})", flush=True)
    results = {"old_commit": commit, "new_commit": new_commit, "limit": args.limit}
    ended = {}
    while len(ended) < len(runs):  # each one's wall time ends when it does
        for name, (process, started, _, _) in runs.items():
            if name not in ended and process.poll() is not None:
                ended[name] = time.perf_counter() - started
        time.sleep(1)
    for name, (process, started, report, command) in runs.items():
        if process.returncode != 0:
            raise RuntimeError(f"the {name} evaluation failed (exit {process.returncode}); "
                               f"see {out}/{name}.log")
        with open(os.path.join(report, "report.json")) as handle:
            saved = json.load(handle)
        results[name] = {"wall_seconds": ended[name],
                         "timings": saved["timings"],
                         "robust_accuracy": saved["robust_accuracy"],
                         "clean_accuracy": saved["clean_accuracy"],
                         "attacks": [{k: a[k] for k in ("name", "attacked", "broken", "seconds")}
                                     for a in saved["attacks"]],
                         "checks": {c["name"]: c["passed"] for c in saved["checks"]},
                         "sweep": saved["sweep"]["curves"],
                         "robust": [b == "robust" for b in saved["broken_by"]]}
        print(f"{name}: {results[name]['wall_seconds']:.0f} s wall, timings "
              f"{saved['timings']}", flush=True)
    old_robust, new_robust = (np.array(results[n].pop("robust")) for n in ("old", "new"))
    results["robust_only_in_old"] = int(np.sum(old_robust & ~new_robust))
    results["robust_only_in_new"] = int(np.sum(new_robust & ~old_robust))
    results["old_over_new"] = results["old"]["wall_seconds"] / results["new"]["wall_seconds"]
    results["old_over_new_evaluation"] = (results["old"]["timings"]["total"]
                                          / results["new"]["timings"]["total"])
    print(f"old / new: {results['old_over_new']:.2f} wall, "
          f"{results['old_over_new_evaluation']:.2f} by the reports' own total")
    return results


# -- precision ------------------------------------------------------------------------------
def precision(args):
    """Pass times of the model and of its bfloat16 copy, side by side (alternating, twice),
    and how often APGD-T and Square break the test images `--indices` in each precision
    over `--seeds` seeds (every break judged by the float32 model)."""
    import keras
    import tensorflow as tf

    from tfrobust import attacks, data
    from tfrobust.evaluation import inputs
    from tfrobust.evaluation import precision as precision_lib

    model = keras.saving.load_model(args.model)
    models = {"float32": model, "mixed_bfloat16": precision_lib.lower_precision_copy(model)}
    logits = {name: inputs.evaluation_logits(m) for name, m in models.items()}
    x, y = data.load_arrays(args.data, "test", limit=256)
    times = {name: [] for name in models}
    for _ in range(2):
        for name in models:
            times[name].append(pass_times(logits[name], x, y))
    indices = [int(i) for i in args.indices.split(",")]
    x, y = data.load_arrays(args.data, "test")
    x, y = x[indices], y[indices]
    breaks = {}
    for name in models:
        for attack in (attacks.APGDTargeted(epsilon=args.epsilon),
                       attacks.Square(epsilon=args.epsilon, num_queries=5000)):
            found = np.zeros(len(indices), int)
            for seed in range(args.seeds):
                x_adv = attack(logits[name], x, y, seed=tf.constant([0, seed]))
                found += np.argmax(logits["float32"](x_adv), -1) != y
            breaks[f"{name} {_label(attack)}"] = dict(zip(map(str, indices), found.tolist()))
            print(name, _label(attack), breaks[f"{name} {_label(attack)}"], flush=True)
    return {"pass_times_ms_per_example": {
                name: [{k: 1e3 * v for k, v in t.items()} for t in runs]
                for name, runs in times.items()},
            "seeds": args.seeds, "breaks_in_seeds": breaks}


# -- first calls ----------------------------------------------------------------------------
def first_calls(args):
    """Seconds of the first call (tracing included) and of a second call of each attack the
    standard report runs often, as an evaluation runs them (stopping when fooled), on the
    first 2 test images."""
    import keras
    import tensorflow as tf

    from tfrobust import attacks, data
    from tfrobust.evaluation import inputs

    logits_fn = inputs.evaluation_logits(keras.saving.load_model(args.model))
    x, y = data.load_arrays(args.data, "test", limit=2)
    epsilon = args.epsilon
    results = {}
    for attack in (attacks.APGDCE(epsilon=epsilon), attacks.APGDTargeted(epsilon=epsilon),
                   attacks.FAB(epsilon=epsilon), attacks.PGD(epsilon=epsilon, num_steps=20),
                   attacks.PGD(epsilon=epsilon, num_steps=20, num_restarts=5)):
        attack = attack.stopping_when_fooled()
        seconds = []
        for call in range(2):
            start = time.perf_counter()
            attack(logits_fn, x, y, seed=tf.constant([0, call]))
            seconds.append(time.perf_counter() - start)
        results[_label(attack)] = {"first": seconds[0], "second": seconds[1]}
        print(_label(attack), results[_label(attack)], flush=True)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("floors", "old-new", "precision", "first-calls"))
    parser.add_argument("--model", required=True, help="a PGD-AT small_cnn .keras file")
    parser.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data",
                                                       "mnist.npz"))
    parser.add_argument("--epsilon", type=float, default=0.3)
    parser.add_argument("--report", help="floors: a report.json of the model whose robust "
                                         "examples to attack")
    parser.add_argument("--examples", type=int, default=32, help="floors: examples per attack")
    parser.add_argument("--resnet-examples", type=int, default=8,
                        help="floors: CIFAR-10 images for preact_resnet18 (0: skip it)")
    parser.add_argument("--cifar", default=os.path.join(ROOT, "..", "shared", "data",
                                                        "cifar10"))
    parser.add_argument("--old-commit", help="old-new: the commit to compare with")
    parser.add_argument("--old-path", help="old-new: an existing checkout of the old code")
    parser.add_argument("--limit", type=int, default=500, help="old-new: test images")
    parser.add_argument("--new-args", default="",
                        help="old-new: options added to the new run's command, e.g. "
                             "'--precision mixed_bfloat16'")
    parser.add_argument("--indices", default="45,200,403",
                        help="precision: test images to attack")
    parser.add_argument("--seeds", type=int, default=4, help="precision: seeds per attack")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    if args.mode == "old-new" and not (args.old_commit or args.old_path):
        parser.error("old-new needs --old-commit or --old-path")
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    results = {"floors": floors, "old-new": old_new, "precision": precision,
               "first-calls": first_calls}[args.mode](args)
    write_json(args.output or os.path.join(ROOT, "benchmarks", "results",
                                           f"evaluation.{args.mode}.json"),
               {"command": " ".join(["python -m benchmarks.evaluation"] + (argv or sys.argv[1:])),
                "started": started, "machine": machine(), "results": results})


if __name__ == "__main__":
    main()
