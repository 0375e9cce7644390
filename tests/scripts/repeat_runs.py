"""Train the same short run several times in one process; count the distinct final weights.

    python tests/scripts/repeat_runs.py pgd-at:dense:adr trades:hypersphere --reps 4

Each SPEC is METHOD:HEAD, or METHOD:HEAD:adr for ADR on that base: the model `tfrobust
train` builds (small_cnn, dropout 0.5, PGD-2 of step 0.15) with seed 0, one epoch of batch
128 on the first 512 bundled digits, with TensorFlow's default thread pools. One distinct
digest of the weights per spec: the run is reproducible on this machine.
"""

import argparse
import hashlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def digest(model):
    return hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest()[:12]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("specs", nargs="+", metavar="SPEC", help="METHOD:HEAD[:adr]")
    parser.add_argument("--reps", type=int, default=4, help="runs per spec (default 4)")
    args = parser.parse_args(argv)

    import keras

    import tfrobust
    from tfrobust import data, recipe

    x, y = data.load_arrays("mnist-sample", split="train")
    info = tfrobust.data.DatasetInfo("mnist-sample", (28, 28, 1), 10, "arrays")
    for spec in args.specs:
        method, head, *adr = spec.split(":")
        digests = []
        for _ in range(args.reps):
            keras.utils.set_random_seed(0)
            options = recipe.resolve(dict(recipe.defaults(), method=method, head=head,
                                          adr=adr == ["adr"], num_steps=2, step_size=0.15,
                                          dropout=0.5))
            model = recipe.build_model(options, info)
            model.fit(x[:512], y[:512], batch_size=128, epochs=1, verbose=0)
            digests.append(digest(model))
        print(f"{spec}: {len(set(digests))} distinct of {len(digests)}: {' '.join(digests)}",
              flush=True)


if __name__ == "__main__":
    main()
