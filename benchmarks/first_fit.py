"""The first `fit` of a new model, its optimizer built before the trace or in it, side by side.

    python -m benchmarks.first_fit [--quick] [--frameworks pgd-at,trades,...]

Keras 3 (TensorFlow, no distribution strategy) creates the optimizer's variables in
the first trace of the train step, and a `tf.function` that creates variables is
traced again: the train step, PGD loops and all, was traced twice in every `fit`.
`RobustModel.fit` builds the optimizer first (`_build_optimizer`). This measures a
new model's first one-epoch `fit` (the cost a user waits through before training
starts, and what every short test pays) both ways, alternating, with the number of
times the train step was traced; the trained weights of the two are compared too.
"""

import argparse

import keras
import numpy as np

import tfrobust
from benchmarks.common import machine, timed, write_json
from tfrobust import attacks, recipe
from tfrobust.models import RobustModel, small_cnn


class _Counting(RobustModel):
    """RobustModel counting its train-step traces; optionally Keras' own (deferred) build."""

    def __init__(self, *args, defer_optimizer=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.defer_optimizer, self.traces = defer_optimizer, 0

    def _build_optimizer(self):
        if not self.defer_optimizer:
            super()._build_optimizer()

    def train_step(self, data):
        self.traces += 1
        return super().train_step(data)


def first_fit(framework, train, num_steps, defer):
    keras.utils.set_random_seed(0)
    objective = recipe.build_objective(recipe.resolve(dict(recipe.defaults(), method=framework)))
    model = _Counting(small_cnn(), keras.layers.Dense(10), objective=objective,
                      attack=attacks.PGD(epsilon=0.3, num_steps=num_steps)
                      if objective.needs_attack else None, eval_attack=False,
                      defer_optimizer=defer)
    model.compile(optimizer="adam")
    x, y = train
    seconds = timed(lambda: model.fit(x, y, batch_size=64, epochs=1, shuffle=False,
                                      verbose=0), 1)[0]
    return seconds, model.traces, model.get_weights()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="PGD-AT and TRADES, 2 repeats")
    parser.add_argument("--frameworks", default=None,
                        help="comma-separated (default: every registered method)")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    repeats = 2 if args.quick else 3
    frameworks = (args.frameworks.split(",") if args.frameworks else
                  ["pgd-at", "trades"] if args.quick else list(recipe.methods()))
    output = args.output or f"benchmarks/results/first_fit{'.quick' if args.quick else ''}.json"
    # Four batches of 64 with PGD-5, unshuffled (the two settings see the same batches): a
    # short first fit, where tracing is most of the time.
    train = tfrobust.data.load_arrays("mnist-sample", "train", limit=256)
    rows = []
    for framework in frameworks:
        seconds = {True: [], False: []}
        traces, weights = {}, {}
        for r in range(repeats):  # alternate so that load drifts hit both settings
            for defer in ((True, False) if r % 2 == 0 else (False, True)):
                took, traces[defer], weights[defer] = first_fit(framework, train, 5, defer)
                seconds[defer].append(took)
        same = all(np.array_equal(a, b) for a, b in zip(weights[True], weights[False]))
        row = {"framework": framework, "deferred_s": seconds[True], "built_first_s": seconds[False],
               "deferred_traces": traces[True], "built_first_traces": traces[False],
               "ratio": float(np.median(seconds[False]) / np.median(seconds[True])),
               "same_weights": same}
        rows.append(row)
        print(f"{framework:9s} deferred {np.median(seconds[True]):5.2f} s ({traces[True]} traces)"
              f"  built first {np.median(seconds[False]):5.2f} s ({traces[False]})"
              f"  ratio {row['ratio']:.2f}  same weights: {same}", flush=True)
    write_json(output, {"machine": machine(), "repeats": repeats, "rows": rows})


if __name__ == "__main__":
    main()
