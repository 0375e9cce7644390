"""Pin what training and evaluation compute, so a restructuring can prove it changed nothing.

    python tests/scripts/pin_behaviour.py --record tests/scripts/pinned_behaviour.json
    python tests/scripts/pin_behaviour.py --check tests/scripts/pinned_behaviour.json

For every framework with each head (and ADR on both bases), the model `tfrobust train`
builds from those options is trained for a few fixed-seed steps on the bundled MNIST
sample; the script records each weight (its SHA-256, sum, L2 norm and eight values), the
training history and the validation logs. Then an evaluation report (the standard
AutoAttack ensemble, the epsilon sweep and every check) of a fixed model on 32 test
images is recorded without its timings and provenance. `--check` recomputes everything
and compares: equal hashes are bitwise equality; otherwise every number must agree to
`--tolerance` (1e-6). One thread, so the order of floating-point sums does not vary.
Run it on the machine that recorded the file: another CPU may round differently.
"""

import argparse
import hashlib
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

import numpy as np  # noqa: E402

METHODS = ("pgd-at", "trades", "alp", "free-at", "fast-at", "standard")
HEADS = ("dense", "hypersphere")
TRAIN_EXAMPLES, BATCH = 48, 16   # three steps, the last one full


def cases():
    """(name, train options) of every pinned training run."""
    for method in METHODS:
        for head in HEADS:
            yield f"{method}/{head}", {"method": method, "head": head}
    for base in ("pgd-at", "trades"):
        for head in HEADS:
            yield f"adr-{base}/{head}", {"method": base, "head": head, "adr": True}


def _options(values):
    from tfrobust.cli import train

    parser = argparse.ArgumentParser()
    train.add_parser(parser.add_subparsers())
    args = parser.parse_args(["train"])
    for key, value in dict(values, num_steps=3, epochs=1, batch_size=BATCH, seed=0,
                           jit_compile="false", output="unused").items():
        setattr(args, key, value)
    return train.resolve_options(args)


def _weights(model):
    record = {}
    for variable in model.weights:
        value = np.asarray(variable.numpy(), dtype=np.float32)
        flat = value.reshape(-1).astype(np.float64)
        picks = np.linspace(0, flat.size - 1, 8).astype(int)
        record[variable.path] = {
            "sha256": hashlib.sha256(value.tobytes()).hexdigest(),
            "sum": float(flat.sum()), "l2": float(np.sqrt((flat ** 2).sum())),
            "values": [float(v) for v in flat[picks]]}
    return record


def train_case(values, images, labels, val_images, val_labels):
    import keras

    from tfrobust import data

    try:
        from tfrobust.recipe import build_model
    except ImportError:  # before issue 18, the CLI built the model
        from tfrobust.cli.train import build_model
    options = _options(values)
    info = data.DatasetInfo("mnist-sample", (28, 28, 1), 10, "bundled")
    keras.utils.set_random_seed(0)
    model = build_model(options, info)
    history = model.fit(images, labels, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    logs = model.evaluate(val_images, val_labels, batch_size=BATCH, return_dict=True, verbose=0)
    return {"history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
            "validation": {k: float(v) for k, v in logs.items()},
            "weights": _weights(model)}


def evaluation_report(images, labels, test_images, test_labels):
    """A standard-trained model's full report on 32 images, without timings."""
    import keras

    import tfrobust
    from tfrobust import models

    keras.utils.set_random_seed(0)
    model = models.RobustModel(models.small_cnn(dropout=0.0), keras.layers.Dense(10),
                               objective="standard", eval_attack=False)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
    model.fit(images, labels, batch_size=64, epochs=2, shuffle=False, verbose=0)
    report = tfrobust.evaluate(model, (test_images, test_labels), epsilon=0.3, verbose=False)
    record = report.to_dict() if hasattr(report, "to_dict") else json.loads(report.to_json())
    for key in ("timings", "provenance"):
        record.pop(key, None)
    record["model"].pop("name", None)  # Keras numbers automatic names by the models built before
    for member in record["attacks"]:
        member.pop("seconds", None)
    return record


def measure(part="all"):
    from tfrobust import data

    train_x, train_y = data.load_arrays("mnist-sample", split="train", limit=512)
    test_x, test_y = data.load_arrays("mnist-sample", split="test", limit=32)
    pinned = {"training": {}, "evaluation": None}
    for name, values in cases() if part in ("all", "training") else ():
        print(f"pin_behaviour: training {name}", file=sys.stderr, flush=True)
        pinned["training"][name] = train_case(values, train_x[:TRAIN_EXAMPLES],
                                              train_y[:TRAIN_EXAMPLES], test_x, test_y)
    if part in ("all", "evaluation"):
        print("pin_behaviour: evaluation report", file=sys.stderr, flush=True)
        pinned["evaluation"] = evaluation_report(train_x, train_y, test_x, test_y)
    return pinned


def compare(expected, actual, tolerance, path="", out=None):
    """Every difference between two records: `(path, expected, actual)`."""
    out = [] if out is None else out
    if isinstance(expected, dict) and isinstance(actual, dict):
        if "sha256" in expected and expected.get("sha256") == actual.get("sha256"):
            return out  # bitwise equal
        for key in sorted(set(expected) | set(actual)):
            if key == "sha256":
                continue
            if key not in expected or key not in actual:
                out.append((f"{path}/{key}", expected.get(key, "<missing>"),
                            actual.get(key, "<missing>")))
            else:
                compare(expected[key], actual[key], tolerance, f"{path}/{key}", out)
    elif isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        for index, (e, a) in enumerate(zip(expected, actual)):
            compare(e, a, tolerance, f"{path}[{index}]", out)
    elif (isinstance(expected, float) and isinstance(actual, (int, float))
          and not isinstance(actual, bool)):
        if not (abs(expected - actual) <= tolerance * max(1.0, abs(expected))
                or (np.isnan(expected) and np.isnan(actual))):
            out.append((path, expected, actual))
    elif expected != actual:
        out.append((path, expected, actual))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--record", metavar="FILE", help="measure and write FILE")
    group.add_argument("--check", metavar="FILE", help="measure and compare with FILE")
    parser.add_argument("--tolerance", type=float, default=1e-6,
                        help="relative tolerance of numbers that are not bitwise equal")
    parser.add_argument("--part", choices=("all", "training", "evaluation"), default="all",
                        help="measure only the training runs or only the evaluation report "
                             "(with --check: compared with that part of the file)")
    args = parser.parse_args(argv)
    if args.record and args.part != "all":
        parser.error("Expected --part all with --record (a recording holds both parts). "
                     f"Received: --part {args.part}")
    if args.check and not os.path.isfile(args.check):
        parser.error(f"Expected --check to name a recorded file. Received: --check {args.check}")
    pinned = measure(args.part)
    if args.record:
        with open(args.record, "w") as handle:
            json.dump(pinned, handle, indent=1, sort_keys=True)
        print(f"pin_behaviour: wrote {args.record}")
        return 0
    with open(args.check) as handle:
        expected = json.load(handle)
    if expected.get("evaluation"):
        expected["evaluation"]["model"].pop("name", None)
    if args.part == "training":
        expected["evaluation"] = None
    elif args.part == "evaluation":
        expected["training"] = {}
    differences = compare(expected, json.loads(json.dumps(pinned)), args.tolerance)
    weights = [(case, name) for case in pinned["training"]
               for name in pinned["training"][case]["weights"]]
    bitwise = sum(1 for case, name in weights
                  if expected["training"].get(case, {}).get("weights", {}).get(name, {})
                  .get("sha256") == pinned["training"][case]["weights"][name]["sha256"])
    print(f"pin_behaviour: {bitwise} of {len(weights)} weights bitwise equal")
    for path, want, got in differences[:40]:
        print(f"DIFFERS {path}: recorded {want!r}, now {got!r}")
    print(f"pin_behaviour: {len(differences)} differences against {args.check} "
          f"(tolerance {args.tolerance:g})")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
