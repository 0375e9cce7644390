"""PGD adversarial training: tfrobust against the Adversarial Robustness Toolbox.

    python -m benchmarks.peers [--quick]        # needs `pip install tfrobust[bench]`

The same `small_cnn` + dense head, the same MNIST sample slice, batch 128, L-inf
0.3, PGD-10 with step 2.5 * 0.3 / 10 and one random start, Adam 1e-3, float32:

- tfrobust: `RobustModel.fit` (PGD-AT, the attack in the compiled train step);
- ART: `AdversarialTrainerMadryPGD` over a `TensorFlowV2Classifier` (the attack
  runs through ART's NumPy PGD between training steps);
- a plain Keras loop (one `tf.function` per batch, `benchmarks.training.HandWritten`)
  for reference.

Each trains one warm-up epoch and then `repeats` timed epochs, alternating the
three; the table gives seconds per epoch and ratios to tfrobust.
"""

import argparse
import statistics
import time

import keras

import tfrobust
from benchmarks.common import machine, write_json
from benchmarks.training import EPSILON, HandWritten, build_robust

NUM_STEPS = 10


def art_trainer(x_shape, seed=0):
    from art.defences.trainer import AdversarialTrainerMadryPGD
    from art.estimators.classification import TensorFlowV2Classifier

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([tfrobust.models.small_cnn(), keras.layers.Dense(10)])
    model.build((None, *x_shape))
    classifier = TensorFlowV2Classifier(
        model=model, nb_classes=10, input_shape=x_shape,
        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        optimizer=keras.optimizers.Adam(1e-3), clip_values=(0.0, 1.0))
    return AdversarialTrainerMadryPGD(classifier, nb_epochs=1, batch_size=128, eps=EPSILON,
                                      eps_step=2.5 * EPSILON / NUM_STEPS, max_iter=NUM_STEPS,
                                      num_random_init=1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer examples and repeats")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    examples, repeats = (512, 3) if args.quick else (2048, 5)
    output = args.output or f"benchmarks/results/peers{'.quick' if args.quick else ''}.json"
    x, y = tfrobust.data.load_arrays("mnist-sample", "train", limit=examples)
    data = tfrobust.data.load("mnist-sample", batch_size=128, limit=examples)

    ours, hand, art = build_robust(NUM_STEPS), HandWritten(NUM_STEPS), art_trainer(x.shape[1:])
    # ART expects one-hot or integer labels; its trainer batches and shuffles itself.
    runs = {
        "tfrobust": lambda: ours.fit(data, epochs=1, verbose=0),
        "keras_loop": lambda: hand.fit_epoch(data),
        "art": lambda: art.fit(x, keras.utils.to_categorical(y, 10), nb_epochs=1),
    }
    seconds = {name: [] for name in runs}
    first = {}
    for name, run in runs.items():
        start = time.perf_counter()
        run()
        first[name] = time.perf_counter() - start
    for r in range(repeats):
        for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            start = time.perf_counter()
            runs[name]()
            seconds[name].append(time.perf_counter() - start)
    median = {k: statistics.median(v) for k, v in seconds.items()}
    # The fastest run of each: these shared machines sometimes halve a process's speed.
    best = {k: min(v) for k, v in seconds.items()}
    ratios = {k: v / best["tfrobust"] for k, v in best.items()}
    print(f"PGD-10 AT epoch of small_cnn on {examples} MNIST images, batch 128 "
          f"(fastest of {repeats}):")
    for name in runs:
        print(f"  {name:<11} {best[name]:8.2f} s/epoch   {ratios[name]:6.2f}x tfrobust's time"
              f"   (first epoch {first[name]:.1f} s)")
    write_json(output, {
        "benchmark": "peers", "quick": args.quick, "machine": machine(),
        "setting": {"model": "small_cnn", "examples": examples, "batch_size": 128,
                    "epsilon": EPSILON, "num_steps": NUM_STEPS, "repeats": repeats},
        "seconds_per_epoch": seconds, "first_epoch_seconds": first, "median": median, "min": best,
        "time_ratio_to_tfrobust": ratios,
        "art_version": __import__("art").__version__,
    })


if __name__ == "__main__":
    main()
