"""XLA on and off for PGD adversarial training, side by side in one run.

    python -m benchmarks.xla [--quick]

Trains `small_cnn` with PGD-AT (PGD-10) on the bundled MNIST sample with
`jit_compile=False` and `True`, alternating the two so that machine load hits
both alike, and reports seconds per training step after compilation and the
compile (first-epoch) overhead. tfrobust's `jit_compile="auto"` default is
chosen from this ratio.
"""

import argparse
import statistics

import keras

import tfrobust
from benchmarks.common import machine, timed, write_json
from tfrobust import attacks
from tfrobust.models import RobustModel, small_cnn


def build(jit_compile, num_steps):
    keras.utils.set_random_seed(0)
    model = RobustModel(small_cnn(), keras.layers.Dense(10),
                        attack=attacks.PGD(epsilon=0.3, num_steps=num_steps), eval_attack=False)
    model.compile(optimizer="adam", jit_compile=jit_compile)
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer examples and repeats")
    parser.add_argument("--output", default="benchmarks/results/xla.json")
    args = parser.parse_args(argv)
    examples, repeats = (1024, 2) if args.quick else (4096, 4)
    num_steps, batch_size = 10, 128
    train = tfrobust.data.load("mnist-sample", batch_size=batch_size, limit=examples)
    steps = examples // batch_size

    models, first_epoch = {}, {}
    for jit in (False, True):
        models[jit] = build(jit, num_steps)
        first_epoch[jit] = timed(lambda m=models[jit]: m.fit(train, epochs=1, verbose=0), 1)[0]
    per_step = {False: [], True: []}
    for _ in range(repeats):  # alternate so that load drifts hit both settings
        for jit in (False, True):
            seconds = timed(lambda m=models[jit]: m.fit(train, epochs=1, verbose=0), 1)[0]
            per_step[jit].append(seconds / steps)

    off, on = statistics.median(per_step[False]), statistics.median(per_step[True])
    print(f"PGD-AT (PGD-{num_steps}) of small_cnn, batch {batch_size}, {examples} examples, "
          f"{repeats} epochs each, medians:")
    print(f"  jit_compile=False: {off * 1000:8.1f} ms/step   first epoch {first_epoch[False]:.1f} s")
    print(f"  jit_compile=True : {on * 1000:8.1f} ms/step   first epoch {first_epoch[True]:.1f} s")
    print(f"  XLA / no-XLA time ratio: {on / off:.2f}")
    write_json(args.output, {
        "benchmark": "xla", "quick": args.quick, "machine": machine(),
        "setting": {"model": "small_cnn", "attack": f"PGD-{num_steps}", "batch_size": batch_size,
                    "examples": examples, "repeats": repeats},
        "seconds_per_step": {"jit_off": per_step[False], "jit_on": per_step[True]},
        "first_epoch_seconds": {"jit_off": first_epoch[False], "jit_on": first_epoch[True]},
        "ratio_on_over_off": on / off,
    })


if __name__ == "__main__":
    main()
