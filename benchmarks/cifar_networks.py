"""Which CIFAR-10 network fits this machine: size, multiply-adds and PGD-AT epoch time.

    python -m benchmarks.cifar_networks [--batches 3] [--repeats 3] [--threads 1]

For each candidate (PreAct ResNet-18 at the reference width and narrowed, WideResNet-16-k),
with a dense head on 32x32x3 inputs: trainable parameters, forward FLOPs per example
(multiply-adds x 2 of the convolutions and dense layers), and the time of a PGD-AT training
step (PGD-10 at L-inf 8/255, step 2/255, batch 128, SGD) per example, in float32 and in
mixed bfloat16, the candidates and precisions interleaved repeat by repeat so that a change in
the machine's load falls on all of them alike. From the step time: the PGD-AT epoch on the
50,000 CIFAR-10 training images. One thread by default: the experiments run two runs side by
side, one core each.

Random images stand in for CIFAR-10 (a step's cost does not depend on the pixel values).
Writes benchmarks/results/cifar_networks.json.
"""

import argparse
import os
import statistics
import sys
import time

BATCH = 128
TRAIN_IMAGES = 50000
CANDIDATES = (
    ("preact_resnet18", "preact_resnet18", {}),
    ("preact_resnet18 width 32", "preact_resnet18", {"base_width": 32}),
    ("preact_resnet18 width 16", "preact_resnet18", {"base_width": 16}),
    ("wide_resnet-16-4", "wide_resnet", {"depth": 16, "width": 4}),
    ("wide_resnet-16-2", "wide_resnet", {"depth": 16, "width": 2}),
)


def _model(builder, kwargs, precision):
    import keras

    from tfrobust import attacks, models, optimizers

    keras.mixed_precision.set_global_policy(precision)
    try:
        backbone = models.get_backbone(builder, (32, 32, 3), **kwargs)
        head = keras.layers.Dense(10, dtype="float32")
        model = models.RobustModel(
            backbone, head, objective="pgd-at",
            attack=attacks.PGD(epsilon=8 / 255, num_steps=10, step_size=2 / 255),
            eval_attack=False, train_clean_accuracy=False)
        model.compile(optimizer=optimizers.SGD(0.1, momentum=0.9, weight_decay=5e-4),
                      jit_compile=False)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return model


def _step_seconds(model, x, y, batches):
    """Seconds per training batch over `batches` batches (after one warm-up batch)."""
    model.train_on_batch(x, y)
    started = time.perf_counter()
    for _ in range(batches):
        model.train_on_batch(x, y)
    return (time.perf_counter() - started) / batches


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=3, help="timed batches per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats")
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow threads")
    parser.add_argument("--only", help="comma-separated candidate names (default: all)")
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results",
                                                         "cifar_networks.json"))
    args = parser.parse_args(argv)
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from benchmarks.common import machine, write_json
    from benchmarks.training import forward_flops

    candidates = [c for c in CANDIDATES
                  if not args.only or c[0] in args.only.split(",")]
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(BATCH, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=(BATCH,)).astype("int32")
    models, rows = {}, {}
    for name, builder, kwargs in candidates:
        for precision in ("float32", "mixed_bfloat16"):
            models[name, precision] = _model(builder, kwargs, precision)
        model = models[name, "float32"]
        rows[name] = {
            "builder": builder, "kwargs": kwargs,
            "parameters": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
            "forward_flops_per_example": forward_flops(model.backbone, (32, 32, 3))
            + 2 * int(np.prod(model.head.kernel.shape)),
            "seconds_per_batch": {"float32": [], "mixed_bfloat16": []},
        }
    for repeat in range(args.repeats):
        for (name, precision), model in models.items():
            seconds = _step_seconds(model, x, y, args.batches)
            rows[name]["seconds_per_batch"][precision].append(seconds)
            print(f"repeat {repeat + 1}: {name:26} {precision:15} {seconds:7.2f} s/batch",
                  flush=True)
    print(f"\n{'network':26} {'params':>10} {'MFLOPs':>8} {'fp32 s/batch':>13} "
          f"{'bf16 s/batch':>13} {'bf16/fp32':>9} {'epoch fp32':>11} {'epoch bf16':>11}")
    for name, row in rows.items():
        medians = {p: statistics.median(s) for p, s in row["seconds_per_batch"].items()}
        row["median_seconds_per_batch"] = medians
        row["bf16_over_fp32"] = medians["mixed_bfloat16"] / medians["float32"]
        row["epoch_minutes"] = {p: m * TRAIN_IMAGES / BATCH / 60 for p, m in medians.items()}
        print(f"{name:26} {row['parameters']:10,} {row['forward_flops_per_example'] / 1e6:8.1f} "
              f"{medians['float32']:13.2f} {medians['mixed_bfloat16']:13.2f} "
              f"{row['bf16_over_fp32']:9.2f} {row['epoch_minutes']['float32']:9.0f} m "
              f"{row['epoch_minutes']['mixed_bfloat16']:9.0f} m")
    write_json(args.output, {
        "command": " ".join(["python -m benchmarks.cifar_networks",
                             *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine(), "threads": args.threads, "batch_size": BATCH,
        "attack": "PGD-10, L-inf 8/255, step 2/255", "repeats": args.repeats,
        "batches_per_repeat": args.batches, "candidates": rows,
    })


if __name__ == "__main__":
    main()
