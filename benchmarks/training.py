"""PGD-AT training throughput: the cost of the abstraction, the floor, FLOP/s, memory, scaling.

    python -m benchmarks.training [--quick]

All on `small_cnn` + a dense head with the bundled MNIST sample, L-inf 0.3,
Adam 1e-3, float32, no XLA (the CPU default), in one process:

1. Abstraction cost: `RobustModel.fit` with PGD-AT (PGD-10) against a minimal
   hand-written `tf.function` PGD-AT step on the same network, data, batch size
   and optimizer, alternating them epoch by epoch; `RobustModel.fit` as it
   comes (logging the clean accuracy of each training batch, one more forward
   pass) and with `train_clean_accuracy=False` (the same work as the loop).
2. The floor: one PGD-10 AT step against what it must do, measured separately:
   10 attack passes (forward plus input gradient) plus one training pass; and
   the FLOP/s achieved against this machine's measured matrix-multiply peak
   (float32 and bfloat16, in the same run).
3. Memory: peak resident memory of a PGD-AT epoch and of a clean epoch, each in
   a fresh subprocess, the peak reset (/proc/self/clear_refs) just before the epoch.
4. Scaling: seconds per epoch against the number of PGD steps (with a
   least-squares line and its R^2) and against the batch size.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time

import keras
import numpy as np
import tensorflow as tf

import tfrobust
from benchmarks.common import machine, write_json
from tfrobust import attacks
from tfrobust.models import RobustModel, small_cnn

EPSILON = 0.3


def build_robust(num_steps, seed=0, train_clean_accuracy=True):
    keras.utils.set_random_seed(seed)
    model = RobustModel(small_cnn(), keras.layers.Dense(10),
                        objective="pgd-at" if num_steps > 0 else "standard",
                        attack=attacks.PGD(epsilon=EPSILON, num_steps=num_steps)
                        if num_steps > 0 else None, eval_attack=False,
                        train_clean_accuracy=train_clean_accuracy)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


class HandWritten:
    """The minimal PGD-AT loop a user would write: one `tf.function` per batch."""

    def __init__(self, num_steps, seed=0, unroll=False):
        keras.utils.set_random_seed(seed)
        self.unroll = unroll
        backbone = small_cnn()
        self.model = keras.Sequential([backbone, keras.layers.Dense(10)])
        self.model.build((None, 28, 28, 1))
        self.optimizer = keras.optimizers.Adam(1e-3)
        self.optimizer.build(self.model.trainable_variables)
        self.num_steps = num_steps
        self.step_size = 2.5 * EPSILON / num_steps
        self.step = tf.function(self._step)

    def _loss(self, x, y, training):
        logits = self.model(x, training=training)
        return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
            y, logits, from_logits=True))

    def _step(self, x, y):
        x_adv = tf.clip_by_value(
            x + tf.random.uniform(tf.shape(x), -EPSILON, EPSILON), 0.0, 1.0)
        for _ in range(self.num_steps) if self.unroll else tf.range(self.num_steps):
            with tf.GradientTape() as tape:
                tape.watch(x_adv)
                loss = self._loss(x_adv, y, training=False)
            grad = tape.gradient(loss, x_adv)
            x_adv = tf.clip_by_value(x_adv + self.step_size * tf.sign(grad),
                                     x - EPSILON, x + EPSILON)
            x_adv = tf.clip_by_value(x_adv, 0.0, 1.0)
        x_adv = tf.stop_gradient(x_adv)
        with tf.GradientTape() as tape:
            loss = self._loss(x_adv, y, training=True)
        grads = tape.gradient(loss, self.model.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        return loss

    def fit_epoch(self, dataset):
        for x, y in dataset:
            self.step(x, y)


def epoch_seconds(fn, dataset):
    start = time.perf_counter()
    fn(dataset)
    return time.perf_counter() - start


def abstraction_cost(dataset, repeats, num_steps=10):
    """`RobustModel.fit` against the hand-written loop, with a `tf.range` loop (what users
    write) and with the steps unrolled in Python (what tfrobust does on CPU).

    The hand-written loop logs nothing; `RobustModel.fit` by default also logs the clean
    accuracy of every training batch, one more forward pass. `tfrobust` is the default,
    `tfrobust_same_work` drops that pass (`train_clean_accuracy=False`): the same work as
    the hand-written loop, so its ratio is the cost of the abstraction itself.
    """
    ours = build_robust(num_steps)
    same_work = build_robust(num_steps, train_clean_accuracy=False)
    theirs, unrolled = HandWritten(num_steps), HandWritten(num_steps, unroll=True)
    runs = {"tfrobust": lambda d: ours.fit(d, epochs=1, verbose=0),
            "tfrobust_same_work": lambda d: same_work.fit(d, epochs=1, verbose=0),
            "hand_written": theirs.fit_epoch, "hand_written_unrolled": unrolled.fit_epoch}
    for fn in runs.values():  # trace and warm up
        fn(dataset)
    seconds = {name: [] for name in runs}
    for r in range(repeats):
        order = list(runs) if r % 2 == 0 else list(runs)[::-1]
        for name in order:
            seconds[name].append(epoch_seconds(runs[name], dataset))
    medians = {k: statistics.median(v) for k, v in seconds.items()}
    best = {k: min(v) for k, v in seconds.items()}
    return {"seconds_per_epoch": seconds, "median": medians, "min": best,
            "ratio_same_work_over_hand_written": best["tfrobust_same_work"] / best["hand_written"],
            "ratio_same_work_over_hand_written_unrolled":
                best["tfrobust_same_work"] / best["hand_written_unrolled"],
            "ratio_tfrobust_over_hand_written": best["tfrobust"] / best["hand_written"],
            "ratio_tfrobust_over_hand_written_unrolled":
                best["tfrobust"] / best["hand_written_unrolled"],
            "ratio_of_medians_same_work":
                medians["tfrobust_same_work"] / medians["hand_written"],
            "ratio_of_medians": medians["tfrobust"] / medians["hand_written"]}


def _abstraction_line(a):
    return (f"RobustModel.fit with the clean-accuracy log {a['min']['tfrobust']:.2f} s, without "
            f"it {a['min']['tfrobust_same_work']:.2f} s, hand-written tf.range loop "
            f"{a['min']['hand_written']:.2f} s, unrolled {a['min']['hand_written_unrolled']:.2f} s;"
            f" same work / tf.range loop {a['ratio_same_work_over_hand_written']:.3f}, / unrolled "
            f"{a['ratio_same_work_over_hand_written_unrolled']:.3f}; with the log / tf.range loop "
            f"{a['ratio_tfrobust_over_hand_written']:.3f}")


def attack_loop(dataset, repeats, num_steps=10):
    """`RobustModel.fit` with the PGD loop as a `tf.while_loop` and unrolled, alternating."""
    models = {}
    for name, limit in (("while_loop", 0), ("unrolled", num_steps)):
        models[name] = build_robust(num_steps)
        models[name].attack.unroll_up_to = limit
        models[name].fit(dataset, epochs=1, verbose=0)  # trace
    seconds = {name: [] for name in models}
    for r in range(repeats):
        for name in (list(models) if r % 2 == 0 else list(models)[::-1]):
            seconds[name].append(epoch_seconds(
                lambda d, m=models[name]: m.fit(d, epochs=1, verbose=0), dataset))
    median = {k: statistics.median(v) for k, v in seconds.items()}
    best = {k: min(v) for k, v in seconds.items()}
    return {"seconds_per_epoch": seconds, "median": median, "min": best,
            "ratio_unrolled_over_while_loop": best["unrolled"] / best["while_loop"],
            "ratio_of_medians": median["unrolled"] / median["while_loop"]}


def pipeline(dataset, repeats):
    """Seconds to iterate the input pipeline alone, for comparison with a training epoch."""
    def iterate(d):
        for _ in d:
            pass

    iterate(dataset)
    return min(epoch_seconds(iterate, dataset) for _ in range(repeats))


def forward_flops(model, input_shape=(28, 28, 1)):
    """Multiply-adds x 2 of one forward pass of one example, from the layer shapes."""
    flops = 0
    for layer in _layers(model):
        if isinstance(layer, keras.layers.Conv2D):
            _, height, width, channels_out = layer.output.shape
            kh, kw, channels_in, _ = layer.kernel.shape
            flops += 2 * height * width * kh * kw * channels_in * channels_out
        elif isinstance(layer, keras.layers.Dense):
            fan_in, fan_out = layer.kernel.shape
            flops += 2 * fan_in * fan_out
    return int(flops)


def _layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _layers(layer)
        else:
            yield layer


def floor(dataset, repeats, num_steps=10):
    """Per batch: PGD-AT step vs num_steps attack passes + one training pass."""
    model = build_robust(num_steps)
    hand = HandWritten(num_steps)
    net = hand.model
    x, y = next(iter(dataset))

    @tf.function
    def attack_pass(images, labels):
        with tf.GradientTape() as tape:
            tape.watch(images)
            loss = hand._loss(images, labels, training=False)
        return tape.gradient(loss, images)

    @tf.function
    def training_pass(images, labels):
        with tf.GradientTape() as tape:
            loss = hand._loss(images, labels, training=True)
        grads = tape.gradient(loss, net.trainable_variables)
        hand.optimizer.apply_gradients(zip(grads, net.trainable_variables))
        return loss

    batches = int(dataset.cardinality())
    model.fit(dataset, epochs=1, verbose=0)
    attack_pass(x, y), training_pass(x, y)
    per_batch = {"pgd_at_step": [], "attack_pass": [], "training_pass": []}
    for _ in range(repeats):
        per_batch["pgd_at_step"].append(
            epoch_seconds(lambda d: model.fit(d, epochs=1, verbose=0), dataset) / batches)
        start = time.perf_counter()
        for _ in range(batches):
            attack_pass(x, y).numpy()
        per_batch["attack_pass"].append((time.perf_counter() - start) / batches)
        start = time.perf_counter()
        for _ in range(batches):
            training_pass(x, y).numpy()
        per_batch["training_pass"].append((time.perf_counter() - start) / batches)
    median = {k: min(v) for k, v in per_batch.items()}  # the least disturbed run of each
    floor_seconds = num_steps * median["attack_pass"] + median["training_pass"]
    batch_size = int(x.shape[0])
    forward = forward_flops(net)
    # Forward F, input gradient ~F more (activation gradients only), training ~3F.
    step_flops = batch_size * forward * (2 * num_steps + 3)
    return {"seconds_per_batch": per_batch, "median": median, "floor_seconds": floor_seconds,
            "ratio_step_over_floor": median["pgd_at_step"] / floor_seconds,
            "forward_flops_per_example": forward, "step_flops": step_flops,
            "achieved_flops_per_second": step_flops / median["pgd_at_step"]}


def matmul_peak(size, repeats):
    """Measured FLOP/s of a (size x size) @ (size x size) product, float32 and bfloat16."""
    out = {}
    for dtype in (tf.float32, tf.bfloat16):
        a = tf.random.normal((size, size), dtype=tf.float32)
        a, b = tf.cast(a, dtype), tf.cast(tf.transpose(a), dtype)
        product = tf.function(lambda u, v: tf.reduce_sum(tf.cast(tf.matmul(u, v), tf.float32)))
        product(a, b).numpy()
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            product(a, b).numpy()
            seconds.append(time.perf_counter() - start)
        out[dtype.name] = 2 * size ** 3 / min(seconds)
    return out


_MEMORY_SCRIPT = """
import sys, json
import keras, tfrobust
from benchmarks.training import build_robust

def status(field):
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith(field)) / 1024

steps, examples = int(sys.argv[1]), int(sys.argv[2])
data = tfrobust.data.load("mnist-sample", batch_size=128, limit=examples)
model = build_robust(steps)
model(next(iter(data))[0][:1])
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")  # reset the peak (VmHWM) to the current resident size
before = status("VmRSS:")
model.fit(data, epochs=1, verbose=0)
print(json.dumps({"before_mb": before, "peak_mb": status("VmHWM:")}))
"""


def memory(examples):
    out = {}
    for name, steps in (("clean", 0), ("pgd_at", 10)):
        result = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(steps), str(examples)],
                                capture_output=True, text=True, timeout=1800, check=True)
        out[name] = json.loads(result.stdout.strip().splitlines()[-1])
    out["ratio_peak_pgd_at_over_clean"] = out["pgd_at"]["peak_mb"] / out["clean"]["peak_mb"]
    out["ratio_growth_pgd_at_over_clean"] = (
        (out["pgd_at"]["peak_mb"] - out["pgd_at"]["before_mb"])
        / max(out["clean"]["peak_mb"] - out["clean"]["before_mb"], 1e-9))
    return out


def scaling(examples, step_counts, batch_sizes, repeats):
    out = {"steps": {}, "batch_size": {}}
    data = tfrobust.data.load("mnist-sample", batch_size=128, limit=examples)
    for steps in step_counts:
        model = build_robust(steps)
        model.fit(data, epochs=1, verbose=0)  # trace
        out["steps"][steps] = min(epoch_seconds(lambda d: model.fit(d, epochs=1, verbose=0), data)
                                  for _ in range(repeats))
    xs = np.array(step_counts, float)
    ys = np.array([out["steps"][s] for s in step_counts])
    slope, intercept = np.polyfit(xs, ys, 1)
    residual = ys - (slope * xs + intercept)
    out["linear_fit"] = {"seconds_per_step_per_epoch": slope, "intercept": intercept,
                         "r2": 1 - residual.var() / ys.var()}
    for batch_size in batch_sizes:
        data = tfrobust.data.load("mnist-sample", batch_size=batch_size, limit=examples)
        model = build_robust(10)
        model.fit(data, epochs=1, verbose=0)
        out["batch_size"][batch_size] = min(epoch_seconds(
            lambda d: model.fit(d, epochs=1, verbose=0), data) for _ in range(repeats))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer examples and repeats")
    parser.add_argument("--abstraction-only", action="store_true",
                        help="only the abstraction cost (4,096 examples, 9 repeats)")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    if args.abstraction_only:
        data = tfrobust.data.load("mnist-sample", batch_size=128, limit=4096)
        a = abstraction_cost(data, 9)
        print("abstraction, fastest of 9 epochs of 4,096 examples: " + _abstraction_line(a))
        write_json(args.output or "benchmarks/results/training.abstraction.json",
                   {"benchmark": "training --abstraction-only", "machine": machine(),
                    "setting": {"model": "small_cnn", "epsilon": EPSILON, "batch_size": 128,
                                "examples": 4096, "repeats": 9}, "abstraction": a})
        return
    # These shared machines sometimes run a process at half speed for seconds at a time
    # (epochs of 2.6 s or exactly 5.1 s, nothing else running): timings alternate the
    # settings and ratios use each setting's fastest run.
    examples, repeats = (1024, 5) if args.quick else (4096, 7)
    output = args.output or f"benchmarks/results/training{'.quick' if args.quick else ''}.json"
    data = tfrobust.data.load("mnist-sample", batch_size=128, limit=examples)

    results = {"benchmark": "training", "quick": args.quick, "machine": machine(),
               "setting": {"model": "small_cnn", "epsilon": EPSILON, "batch_size": 128,
                           "examples": examples, "repeats": repeats}}
    results["abstraction"] = a = abstraction_cost(data, repeats)
    print(f"1. abstraction (fastest of {repeats}): {_abstraction_line(a)}", flush=True)
    results["attack_loop"] = loop = attack_loop(data, repeats)
    print(f"   attack loop: while_loop {loop['min']['while_loop']:.2f} s/epoch, unrolled "
          f"{loop['min']['unrolled']:.2f} s/epoch, ratio "
          f"{loop['ratio_unrolled_over_while_loop']:.3f}", flush=True)
    results["pipeline_seconds_per_epoch"] = pipe = pipeline(data, repeats)
    print(f"   input pipeline alone: {pipe:.3f} s/epoch "
          f"({100 * pipe / a['min']['tfrobust']:.1f}% of a PGD-AT epoch)", flush=True)
    results["floor"] = f = floor(data, repeats)
    results["matmul_peak"] = p = matmul_peak(1024 if args.quick else 2048, repeats)
    print(f"2. floor: PGD-10 AT step {1000 * f['median']['pgd_at_step']:.1f} ms, attack pass "
          f"{1000 * f['median']['attack_pass']:.1f} ms, training pass "
          f"{1000 * f['median']['training_pass']:.1f} ms, floor {1000 * f['floor_seconds']:.1f} "
          f"ms, ratio {f['ratio_step_over_floor']:.3f}; achieved "
          f"{f['achieved_flops_per_second'] / 1e9:.1f} GFLOP/s vs matmul peak "
          f"{p['float32'] / 1e9:.1f} (float32), {p['bfloat16'] / 1e9:.1f} (bfloat16) GFLOP/s",
          flush=True)
    results["memory"] = m = memory(examples)
    print(f"5. memory: peak RSS clean {m['clean']['peak_mb']:.0f} MB, PGD-AT "
          f"{m['pgd_at']['peak_mb']:.0f} MB (ratio {m['ratio_peak_pgd_at_over_clean']:.2f})",
          flush=True)
    step_counts = (1, 5, 10) if args.quick else (1, 2, 5, 10, 20)
    batch_sizes = (64, 128, 256) if args.quick else (32, 64, 128, 256)
    results["scaling"] = s = scaling(examples // 2 if args.quick else examples, step_counts,
                                     batch_sizes, repeats)
    print(f"6. scaling: epoch seconds by PGD steps {s['steps']}, linear fit R^2 "
          f"{s['linear_fit']['r2']:.4f}; by batch size {s['batch_size']}", flush=True)
    write_json(output, results)


if __name__ == "__main__":
    main()
