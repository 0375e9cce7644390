"""Why ADR diverges on small_cnn: the scale of the latent under compactness's one-sided gradient.

    python experiments/adr_scale.py [--updates 64] [--every 8] [--variants NAME ...]

ADR's distance `d(z, z') = mean_k |sg(z_k) - z'_k|` (the reference code's, SPEC section 3)
lets gradients through the adversarial side only. The clean latent `z` is a target that the
update does not move, but it comes from the same weights: if they grow, `z` grows with `z'`.
Along the weights' scale (a ReLU network's latent is about proportional to it), the gradient
of local compactness is proportional to `r = sum_k sign(z'_k - z_k) z'_k / sum_k |z'_k|`
(relative): where `r < 0`, a descent step grows the latent, and since `r` does not depend on
the scale, nothing stops it but the cross-entropy. With the gradient through both sides the
same component is `sum_k |z'_k - z_k| >= 0`: descent can only shrink the latent, and a latent
of zeros makes both compactness terms zero. The reference code that runs (ADR's TensorFlow
code, CIFAR-10) regularises the output of a BatchNorm in training mode, whose scale the
convolutions cannot change; the MNIST latent it names (`flatten`) has no normalisation.

Each variant is the short run of tests/test_reference_fidelity.py (`_short_run`): small_cnn
from `tfrobust train`'s model builder, dropout 0.5, ADR with every reference term on
`flatten`, PGD-2 at L-inf 0.3 (step 0.15), Adam 1e-3, batches of 128 from the bundled
sample's first 4,096 digits. Every `--every` updates, on a fixed batch of 128 other training
digits and its PGD-2 examples (the latent in inference mode): `r`, the mean |z| and the local
compactness `mean |z - z'|`. At the end: clean and PGD-10 accuracy on 500 test digits.
Variants (the regularisers are replaced on the built objective, nothing else changes), with
small_cnn's reference initialisation (kaiming convolutions, zero dense head: the setting that
diverged in every run so far) unless said:
- `reference`: ADR as tfrobust and the reference compute it;
- `both-sides`: local and global compactness with the gradient through both `z` and `z'`;
- `standardised`: local and global compactness on the latent standardised per feature over
  its batch (clean and adversarial batches each by their own statistics, as separate
  BatchNorm calls in training mode would, without the affine part);
- `keras`, `keras-standardised`: the first and the third with Keras' initialisation (the
  default: it trained on this short run and diverged in two of three 5-epoch seeds).
Writes experiments/results/adr_scale.json; `python experiments/tables.py --write` puts it in
experiments/README.md.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUT = os.path.join(ROOT, "experiments", "results", "adr_scale.json")
BATCH = 128
TRAIN_DIGITS = 4096
#: name: (initialization, how local and global compactness read the latent)
VARIANTS = {
    "reference": ("reference", "reference"),
    "both-sides": ("reference", "both sides"),
    "standardised": ("reference", "standardised"),
    "keras": ("keras", "reference"),
    "keras-standardised": ("keras", "standardised"),
}


def _regularizers(kind):
    """ADR's reference terms, with local and global compactness computed as `kind` says."""
    import tensorflow as tf

    from tfrobust.objectives import regularizers as R

    def standardised(h):
        mean, variance = tf.nn.moments(h, axes=[0])
        return (h - mean) * tf.math.rsqrt(variance + 1e-3)

    class Local(R.LocalCompactness):
        def __call__(self, z, z_adv, logits, logits_adv, labels, num_classes):
            if kind == "both sides":
                return tf.reduce_mean(tf.abs(z - z_adv), axis=-1)
            return super().__call__(standardised(z), standardised(z_adv), logits, logits_adv,
                                    labels, num_classes)

    class Global(R.GlobalCompactness):
        def __call__(self, z, z_adv, logits, logits_adv, labels, num_classes):
            if kind == "both sides":
                pairwise = tf.reduce_mean(tf.abs(z_adv[:, None, :] - z[None, :, :]), axis=-1)
                return tf.reduce_mean(R.label_weights(labels, num_classes) * pairwise, axis=1)
            return super().__call__(standardised(z), standardised(z_adv), logits, logits_adv,
                                    labels, num_classes)

    terms = R.reference_regularizers()
    if kind == "reference":
        return terms
    swap = {"local_compactness": Local, "global_compactness": Global}
    return [swap[t.name](t.weight) if t.name in swap else t for t in terms]


def run_variant(initialization, kind, updates, every, data):
    import keras
    import tensorflow as tf

    from tfrobust import attacks, recipe
    from tfrobust import data as data_lib

    x, y, x_probe, y_probe, x_test, y_test = data
    keras.utils.set_random_seed(0)
    options = recipe.resolve(dict(recipe.defaults(), method="pgd-at", adr=True,
                                  initialization=initialization, num_steps=2, step_size=0.15,
                                  dropout=0.5))
    info = data_lib.DatasetInfo("mnist-sample", (28, 28, 1), 10, "arrays")
    model = recipe.build_model(options, info)
    model.objective.regularizers = _regularizers(kind)
    probe_attack = attacks.PGD(epsilon=0.3, num_steps=2, step_size=0.15)
    latent = keras.Model(model.backbone.inputs, model.backbone.get_layer("flatten").output)
    trajectory = []

    def probe(step):
        x_adv = probe_attack.perturb(model, x_probe, y_probe, tf.constant([3, 4]))
        z = latent(x_probe, training=False).numpy().reshape(len(x_probe), -1)
        z_adv = latent(x_adv, training=False).numpy().reshape(len(x_probe), -1)
        size = float(np.sum(np.abs(z_adv)))
        trajectory.append({
            "update": step,
            "r": float(np.sum(np.sign(z_adv - z) * z_adv) / size) if size > 0 else None,
            "latent_mean_abs": float(np.mean(np.abs(z))),
            "local_compactness": float(np.mean(np.abs(z - z_adv)))})

    class Probe(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            step = int(model.optimizer.iterations.numpy())
            if step % every == 0:
                probe(step)

    started = time.perf_counter()
    model.fit(x, y, batch_size=BATCH, epochs=updates * BATCH // len(x), verbose=0,
              callbacks=[Probe()])
    x_adv = attacks.PGD(epsilon=0.3, num_steps=10, step_size=0.075).perturb(
        model, x_test, y_test, tf.constant([1, 2]))
    return {
        "updates": int(model.optimizer.iterations.numpy()),
        "clean": float(np.mean(np.argmax(model.predict(x_test, verbose=0), -1) == y_test)),
        "pgd10": float(np.mean(np.argmax(model.predict(x_adv, verbose=0), -1) == y_test)),
        "trajectory": trajectory,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {value}")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    per_pass = TRAIN_DIGITS // BATCH
    parser.add_argument("--updates", type=_positive, default=2 * per_pass,
                        help=f"optimizer updates, a whole number of passes over {TRAIN_DIGITS:,} "
                             f"digits ({per_pass} batches each; default {2 * per_pass}, the "
                             "test's short run)")
    parser.add_argument("--every", type=_positive, default=8,
                        help="measure r, the latent's size and compactness every this many "
                             "updates (default 8)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        metavar="NAME",
                        help=f"the variants to run (default: all of {', '.join(VARIANTS)})")
    parser.add_argument("--output", default=OUTPUT)
    args = parser.parse_args(argv)
    if args.updates % per_pass:
        parser.error(f"argument --updates: expected a multiple of {per_pass} (whole passes "
                     f"over {TRAIN_DIGITS:,} digits), got {args.updates}")
    if args.every > args.updates:
        parser.error(f"argument --every: expected at most --updates ({args.updates}), got "
                     f"{args.every}")
    names = args.variants

    from tfrobust import data as data_lib
    from tfrobust.utils.provenance import provenance

    x, y = data_lib.load_arrays("mnist-sample", split="train")
    x_test, y_test = data_lib.load_arrays("mnist-sample", split="test")
    probe_rows = slice(TRAIN_DIGITS, TRAIN_DIGITS + BATCH)
    data = (x[:TRAIN_DIGITS], y[:TRAIN_DIGITS], x[probe_rows], y[probe_rows].astype("int32"),
            x_test[:500], y_test[:500].astype("int32"))
    rows = {}
    for name in names:
        rows[name] = run_variant(*VARIANTS[name], args.updates, args.every, data)
        last = rows[name]["trajectory"][-1] if rows[name]["trajectory"] else {}
        print(f"{name}: clean {rows[name]['clean']:.3f}, PGD-10 {rows[name]['pgd10']:.3f}, "
              f"last mean |z| {last.get('latent_mean_abs')}, r {last.get('r')}", flush=True)
    command = (f"python experiments/adr_scale.py --updates {args.updates} --every {args.every}"
               + ("" if names == list(VARIANTS) else f" --variants {' '.join(names)}"))
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump({"command": command,
                   "variants": {n: dict(zip(("initialization", "compactness"), VARIANTS[n]))
                                for n in names},
                   "results": rows, **provenance()}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
