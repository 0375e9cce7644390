"""Build `tfrobust/data/mnist_sample.npz`, the MNIST sample bundled with tfrobust.

The sample is the first 10,000 training and the first 2,000 test images of
MNIST in canonical order, taken from a Keras-layout `mnist.npz`
(`x_train y_train x_test y_test`, uint8). It is what `tfrobust.data.load(
"mnist-sample")` reads, so the library works offline out of the box.

Usage (from the repository root):

    python scripts/build_mnist_sample.py [SOURCE] [--output PATH]

SOURCE defaults to `../shared/data/mnist.npz`, relative to the repository root.
"""

import argparse
import pathlib
import sys

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = "../shared/data/mnist.npz"
DEFAULT_OUTPUT = "tfrobust/data/mnist_sample.npz"
NUM_TRAIN = 10_000
NUM_TEST = 2_000
# The first training labels of canonical MNIST; a source in another order
# would silently give a different sample.
CANONICAL_FIRST_LABELS = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
MAX_BYTES = 3 * 1024 * 1024


def build(source, output):
    """Write the sample from `source` to `output` and return the output size in bytes."""
    with np.load(source) as full:
        sample = {
            "x_train": full["x_train"][:NUM_TRAIN],
            "y_train": full["y_train"][:NUM_TRAIN],
            "x_test": full["x_test"][:NUM_TEST],
            "y_test": full["y_test"][:NUM_TEST],
        }
    for key, array in sample.items():
        expected_ndim = 3 if key.startswith("x") else 1
        if array.dtype != np.uint8 or array.ndim != expected_ndim:
            raise ValueError(
                f"Expected {key} as uint8 of rank {expected_ndim}. Received: "
                f"{key} of dtype {array.dtype} with shape {array.shape}"
            )
    if sample["y_train"][:10].tolist() != CANONICAL_FIRST_LABELS:
        raise ValueError(
            f"Expected MNIST in canonical order (first labels {CANONICAL_FIRST_LABELS}). "
            f"Received: y_train[:10]={sample['y_train'][:10].tolist()}"
        )
    output = pathlib.Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(output, **sample)
    size = output.stat().st_size
    if size >= MAX_BYTES:
        raise ValueError(f"Expected the sample under 3 MB. Received: size={size} bytes")
    return size


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", default=DEFAULT_SOURCE,
                        help="Keras-layout mnist.npz (relative paths are taken from "
                             "the repository root; default: %(default)s)")
    parser.add_argument("--output", default=DEFAULT_OUTPUT,
                        help="where to write the sample (default: %(default)s)")
    args = parser.parse_args(argv)
    source = REPO_ROOT / args.source
    output = REPO_ROOT / args.output
    size = build(source, output)
    print(f"wrote {output} ({size} bytes): {NUM_TRAIN} train and {NUM_TEST} test images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
