"""Build `tfrobust/data/cifar10_sample.npz`, the CIFAR-10 sample bundled with tfrobust.

The sample is the first 200 training and the first 200 test images of the project's full
CIFAR-10 TFRecord files (tfds schema, JPEG-encoded; `tfrobust/data/CIFAR10_SAMPLE.md`),
decoded as `tfrobust.data` decodes them, as uint8. It is what `tfrobust.data.load(
"cifar10-sample")` reads, and what `tfrobust evaluate pretrained:NAME` attacks by default
for the zoo's CIFAR-10 models: the first 200 test images of their reports.

Usage (from the repository root):

    python scripts/build_cifar10_sample.py [SOURCE] [--output PATH]

SOURCE defaults to `../shared/data/cifar10` (a directory of train.tfrecord, test.tfrecord).
"""

import argparse
import pathlib
import sys

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = "../shared/data/cifar10"
DEFAULT_OUTPUT = "tfrobust/data/cifar10_sample.npz"
NUM_IMAGES = 200  # of each split
MAX_BYTES = 2 * 1024 * 1024


def build(source, output):
    """Write the sample from the TFRecord directory `source` to `output`; its size in bytes."""
    import tensorflow as tf

    spec = {"image": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.int64)}
    sample = {}
    for split in ("train", "test"):
        images, labels = [], []
        records = tf.data.TFRecordDataset(str(pathlib.Path(source) / f"{split}.tfrecord"))
        for record in records.take(NUM_IMAGES):
            example = tf.io.parse_single_example(record, spec)
            images.append(tf.io.decode_jpeg(example["image"], channels=3).numpy())
            labels.append(int(example["label"]))
        sample[f"x_{split}"] = np.stack(images).astype(np.uint8)
        sample[f"y_{split}"] = np.asarray(labels, np.uint8)
    output = pathlib.Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(output, **sample)
    size = output.stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"Expected the sample below {MAX_BYTES} bytes. Received: {size}")
    return size


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", default=DEFAULT_SOURCE)
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    source = pathlib.Path(args.source)
    source = source if source.is_absolute() else REPO_ROOT / source
    output = pathlib.Path(args.output)
    output = output if output.is_absolute() else REPO_ROOT / output
    size = build(source, output)
    print(f"wrote {output} ({size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
