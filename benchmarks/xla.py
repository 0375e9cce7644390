"""XLA on and off for adversarial training, per framework, side by side in one run.

    python -m benchmarks.xla [--quick] [--frameworks pgd-at,trades,...]

Trains `small_cnn` (PGD-10 as the training attack) on the bundled MNIST sample
with `jit_compile=False` and `True`, alternating the two so that machine load
hits both alike, and reports seconds per training step after compilation
(the fastest epoch of each setting) and the compile (first-epoch) overhead.
`--quick` measures PGD-AT only; the full run every framework. tfrobust's
`jit_compile="auto"` default is chosen from these ratios.
"""

import argparse

import keras

import tfrobust
from benchmarks.common import machine, timed, write_json
from tfrobust import attacks, recipe
from tfrobust.models import RobustModel, small_cnn


def build(jit_compile, num_steps, framework="pgd-at"):
    keras.utils.set_random_seed(0)
    objective = recipe.build_objective(recipe.resolve(dict(recipe.defaults(), method=framework)))
    model = RobustModel(small_cnn(), keras.layers.Dense(10), objective=objective,
                        attack=attacks.PGD(epsilon=0.3, num_steps=num_steps)
                        if objective.needs_attack else None, eval_attack=False)
    model.compile(optimizer="adam", jit_compile=jit_compile)
    return model


def measure(framework, train, steps, repeats, num_steps):
    """Seconds per step (each epoch) and first-epoch seconds, XLA off and on, alternating."""
    models, first_epoch = {}, {}
    for jit in (False, True):
        models[jit] = build(jit, num_steps, framework)
        first_epoch[jit] = timed(lambda m=models[jit]: m.fit(train, epochs=1, verbose=0), 1)[0]
    per_step = {False: [], True: []}
    for r in range(repeats):  # alternate so that load drifts hit both settings
        for jit in ((False, True) if r % 2 == 0 else (True, False)):
            seconds = timed(lambda m=models[jit]: m.fit(train, epochs=1, verbose=0), 1)[0]
            per_step[jit].append(seconds / steps)
    return per_step, first_epoch


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="PGD-AT only, fewer examples")
    parser.add_argument("--frameworks", default=None,
                        help="comma-separated (default: pgd-at with --quick, else every "
                             "registered method)")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    examples, repeats = (1024, 2) if args.quick else (1024, 3)
    frameworks = (args.frameworks.split(",") if args.frameworks else
                  ["pgd-at"] if args.quick else list(recipe.methods()))
    output = args.output or f"benchmarks/results/xla{'.quick' if args.quick else ''}.json"
    num_steps, batch_size = 10, 128
    train = tfrobust.data.load("mnist-sample", batch_size=batch_size, limit=examples)
    steps = examples // batch_size
    rows = {}
    print(f"small_cnn, training attack PGD-{num_steps}, batch {batch_size}, {examples} "
          f"examples, fastest of {repeats} epochs each:")
    for framework in frameworks:
        per_step, first_epoch = measure(framework, train, steps, repeats, num_steps)
        off, on = min(per_step[False]), min(per_step[True])
        rows[framework] = {"seconds_per_step": {"jit_off": per_step[False],
                                                "jit_on": per_step[True]},
                           "first_epoch_seconds": {"jit_off": first_epoch[False],
                                                   "jit_on": first_epoch[True]},
                           "ratio_on_over_off": on / off}
        print(f"  {framework:<9} no XLA {off * 1000:7.1f} ms/step (first epoch "
              f"{first_epoch[False]:5.1f} s)   XLA {on * 1000:7.1f} ms/step (first epoch "
              f"{first_epoch[True]:5.1f} s)   XLA / no-XLA {on / off:5.2f}", flush=True)
    write_json(output, {
        "benchmark": "xla", "quick": args.quick, "machine": machine(),
        "setting": {"model": "small_cnn", "attack": f"PGD-{num_steps}", "batch_size": batch_size,
                    "examples": examples, "repeats": repeats},
        "results": rows,
    })


if __name__ == "__main__":
    main()
