"""Input pipelines for robust training: `load`, `load_arrays`, `info`.

Every dataset comes out the same way, whatever its source: float32 images of
shape (batch, height, width, channels) in [0, 1] (grayscale gets a channel
axis) and int32 labels of shape (batch,). Attacks clip to [0, 1], so the
images are never normalized here; normalization belongs in the model.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from tfrobust.data import folders, sources
from tfrobust.data.sources import DataUnavailableError, DatasetInfo
from tfrobust.utils.validation import check_labels, check_number

__all__ = ["DATASETS", "DataUnavailableError", "DatasetInfo", "info", "load", "load_arrays"]

DATASETS = sources.known_names()

# Streamed sources (TFRecord, tfds) cannot shuffle all at once; a TFRecord
# buffer holds serialized records (about 1 KB each for CIFAR-10 JPEGs).
_TFRECORD_SHUFFLE_BUFFER = 20_000
_TFDS_SHUFFLE_BUFFER = 10_000
_CROP_PADDING = 4
_ARRAYS_BATCH = 1024


def info(data, *, data_dir=None, image_size=None, num_classes=None):
    """Describe a dataset without building a pipeline.

    The number of classes comes from the data's metadata: the tfds builder's
    feature spec, an image folder's class folders, the bundled sample (MNIST:
    10), or an `.npz` file's `num_classes` entry; else from `num_classes`. It is
    never guessed from the labels seen (a training set missing a class would
    give a wrong head): a TFRecord source, or an `.npz` file without the entry,
    needs `num_classes`. Where the labels are counted (`.npz`, TFRecord, the
    bundled sample), every label must be below it, and `classes_in_train` says
    how many classes the training split has examples of.

    Args:
        data: A name from `DATASETS`, or a path to a Keras-layout `.npz`
            file, a `.tfrecord` file, a directory of `<split>.tfrecord`
            files, or an image folder.
        data_dir: tensorflow-datasets data directory (tfds names only).
        image_size: `(height, width)` an image folder's images are resized to.
        num_classes: The number of classes, for data that does not say; for
            data that does, it must agree.

    Returns:
        A `DatasetInfo` with `name`, `image_shape`, `num_classes`, `source`,
        `classes_in_train`.

    Example:

    >>> tfrobust.data.info("mnist-sample")
    DatasetInfo(name='mnist-sample', image_shape=(28, 28, 1), num_classes=10, source='bundled', \
classes_in_train=10)
    """
    if num_classes is not None:
        num_classes = check_number("num_classes", num_classes, minimum=2, integer=True)
    source = sources.resolve(data)
    if source.kind in ("folder", "tfds"):
        described = (sources.folder_info(source, image_size) if source.kind == "folder"
                     else sources.tfds_info(source, data_dir))
        _check_agrees(described, num_classes)
        return described
    if source.kind == "tfrecord":
        described = sources.tfrecord_info(source)
        counts = sources.tfrecord_label_counts(source)
        train_counts = (sources.tfrecord_label_counts(source, "train")
                        if source.path.is_dir() else counts)
    else:
        arrays, declared = sources.read_arrays(source)
        shape = tuple(int(d) for d in arrays["x_train"].shape[1:])
        described = DatasetInfo(source.name, shape, declared,
                                "bundled" if source.kind == "bundled" else "npz")
        counts = np.bincount(np.concatenate([arrays["y_train"], arrays["y_test"]]))
        train_counts = np.bincount(arrays["y_train"])
    _check_agrees(described, num_classes)
    resolved = described.num_classes or num_classes
    if resolved is None:
        raise ValueError(
            f"Expected the number of classes of data={source.name!r}: pass num_classes "
            f"(tfrobust train --num-classes N)"
            + (" or add a num_classes entry to the .npz file" if source.kind == "npz" else "")
            + f". Received: {source.kind} data that does not say (its labels, all splits, "
            f"run from 0 to {len(counts) - 1}); the class count is never guessed from the "
            "labels seen")
    if len(counts) > resolved:
        raise ValueError(f"Expected labels below num_classes={resolved}. Received: "
                         f"data={source.name!r} with labels up to {len(counts) - 1}")
    return dataclasses.replace(described, num_classes=resolved,
                               classes_in_train=int(np.count_nonzero(train_counts)))


def _check_agrees(described, num_classes):
    """Refuse a `num_classes` that contradicts what the data declares."""
    if None not in (num_classes, described.num_classes) and num_classes != described.num_classes:
        raise ValueError(f"Expected num_classes={described.num_classes}, as data="
                         f"{described.name!r} declares. Received: num_classes={num_classes}")


def load(data, split="train", *, batch_size=128, shuffle=None, augment=None, limit=None,
         seed=0, data_dir=None, drop_remainder=False, download=True, image_size=None):
    """Build a batched `tf.data.Dataset` of `(images, labels)`.

    Images are float32 (batch, height, width, channels) in [0, 1] and labels
    int32 (batch,). The training split is shuffled (seeded, reshuffled every
    epoch) and, for 3-channel (CIFAR-like) data, augmented with a random crop
    after 4-pixel zero padding and a random horizontal flip. Grayscale data is
    never augmented by default: flipped digits are other digits. The dataset
    is prefetched with `tf.data.AUTOTUNE`.

    Args:
        data: `"mnist-sample"` (bundled, works offline), a tfds name from
            `DATASETS`, or a path: a Keras-layout `.npz` file (`x_train y_train
            x_test y_test`), a `.tfrecord` file (used whatever `split` is), or
            a directory holding `<split>.tfrecord` files with the tfds schema
            (`image`: PNG/JPEG bytes, `label`: int64), or an image folder (one
            subfolder per class of PNG or JPEG files, see
            `tfrobust.data.folders.FOLDER_LAYOUTS` and `folder_dataset`).
        split: `"train"` or `"test"` (tfds names also take tfds split strings
            such as `"train[:10%]"`; a TFRecord directory any file stem).
        batch_size: Positive number of examples per batch.
        shuffle: `None` shuffles the training split only; `True`/`False` force it.
        augment: `None` augments the training split of 3-channel data only;
            `True`/`False` force it.
        limit: If set, keep only the first `limit` examples (before shuffling).
        seed: Seed for shuffling and augmentation; the same seed gives the
            same batches.
        data_dir: tensorflow-datasets data directory (tfds names only).
        image_size: `(height, width)` to resize an image folder's images to
            (default: the size of its first image); other sources ignore it.
        drop_remainder: Drop the last batch if it is smaller than `batch_size`.
        download: Let tensorflow-datasets download missing data (tfds names
            only). With `False` nothing touches the network.

    Returns:
        A `tf.data.Dataset` yielding `(images, labels)` batches.

    Raises:
        DataUnavailableError: A tfds dataset is neither prepared nor downloadable.
        FileNotFoundError: A path (or `<split>.tfrecord` in a directory) is missing.
        ValueError: An unknown name or split, or images/labels out of range.

    Example:

    >>> train = tfrobust.data.load("mnist-sample", batch_size=128)
    >>> images, labels = next(iter(train))
    >>> images.shape, labels.dtype
    (TensorShape([128, 28, 28, 1]), tf.int32)
    """
    batch_size = check_number("batch_size", batch_size, 1, integer=True)
    limit = _check_limit(limit)
    seed = check_number("seed", seed, integer=True)
    shuffle = _check_flag("shuffle", shuffle)
    augment = _check_flag("augment", augment)
    drop_remainder = _check_flag("drop_remainder", drop_remainder, allow_none=False)
    source = sources.resolve(data)
    split = sources.check_split(source, split)
    is_train = all(name == "train" for name in sources.split_names(split))
    if shuffle is None:
        shuffle = is_train

    if source.kind in ("bundled", "npz"):
        arrays, _ = sources.read_arrays(source)
        x, y = arrays[f"x_{split}"][:limit], arrays[f"y_{split}"][:limit]
        dataset = _array_batches(x, y, batch_size, shuffle, seed, drop_remainder)
        channels = x.shape[-1]
    else:
        if source.kind == "folder":
            examples, shape = folders.folder_dataset(source.path, split, image_size)
            examples = _take(examples, limit)  # the training split comes shuffled by Keras
            channels = shape[-1]
        elif source.kind == "tfrecord":
            records, decode, shape = sources.tfrecord_dataset(
                source, sources.tfrecord_files(source, split))
            examples = _take(records, limit)
            if shuffle:
                examples = examples.shuffle(_TFRECORD_SHUFFLE_BUFFER, seed=seed,
                                            reshuffle_each_iteration=True)
            examples = examples.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
            channels = shape[-1]
        else:
            # Shuffling files would change which examples `limit` keeps.
            examples = sources.tfds_dataset(
                source, split, data_dir=data_dir, download=download,
                shuffle_files=shuffle and limit is None, seed=seed)
            examples = _take(examples, limit)
            if shuffle:
                examples = examples.shuffle(_TFDS_SHUFFLE_BUFFER, seed=seed,
                                            reshuffle_each_iteration=True)
            channels = examples.element_spec[0].shape[-1]
        dataset = examples.batch(batch_size, drop_remainder=drop_remainder)

    dataset = dataset.map(_to_float, num_parallel_calls=tf.data.AUTOTUNE)
    if augment is None:
        augment = is_train and channels == 3
    if augment:
        dataset = _augmented(dataset, seed)
    return dataset.prefetch(tf.data.AUTOTUNE)


def load_arrays(data, split="train", *, limit=None, data_dir=None, download=True,
                image_size=None):
    """Load a whole split into NumPy arrays.

    Meant for test sets and small data: the bundled sample, `.npz` files and
    TFRecord files (decoded in full; use `limit` for large training sets).
    tfds names work too, through the same pipeline as `load`.

    Args:
        data: As for `load`.
        split: As for `load`.
        limit: If set, keep only the first `limit` examples.
        data_dir: tensorflow-datasets data directory (tfds names only).
        download: Let tensorflow-datasets download missing data (tfds names only).

    Returns:
        `(x, y)`: float32 images (N, H, W, C) in [0, 1] and int32 labels (N,),
        in the order of the source.

    Example:

    >>> x_test, y_test = tfrobust.data.load_arrays("mnist-sample", "test")
    >>> x_test.shape, y_test.shape
    ((2000, 28, 28, 1), (2000,))
    """
    limit = _check_limit(limit)
    source = sources.resolve(data)
    split = sources.check_split(source, split)
    if source.kind in ("bundled", "npz"):
        arrays, _ = sources.read_arrays(source)
        x, y = arrays[f"x_{split}"][:limit], arrays[f"y_{split}"][:limit]
        if x.dtype == np.uint8:
            x = x.astype(np.float32) / np.float32(255)
        return np.array(x, dtype=np.float32), np.array(y, dtype=np.int32)
    dataset = load(data, split,
                   batch_size=_ARRAYS_BATCH, shuffle=False, augment=False, limit=limit,
                   data_dir=data_dir, download=download, image_size=image_size)
    batches = list(dataset.as_numpy_iterator())
    if not batches:
        spec = dataset.element_spec[0].shape
        return np.zeros((0, *spec[1:]), np.float32), np.zeros((0,), np.int32)
    x = np.concatenate([b[0] for b in batches])
    y = check_labels(np.concatenate([b[1] for b in batches]), name="y")
    return x, y


def _check_limit(limit):
    if limit is None:
        return None
    return check_number("limit", limit, 1, integer=True)


def _check_flag(name, value, allow_none=True):
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    choices = "True, False or None" if allow_none else "True or False"
    raise TypeError(f"Expected {name} to be {choices}. Received: {name}={value!r}")


def _take(dataset, limit):
    return dataset if limit is None else dataset.take(limit)


def _array_batches(x, y, batch_size, shuffle, seed, drop_remainder):
    """Batches of in-memory arrays, shuffled as indices so no pixel is copied twice."""
    images, labels = tf.constant(x), tf.constant(y)
    indices = tf.data.Dataset.range(len(x))
    if shuffle:
        indices = indices.shuffle(max(len(x), 1), seed=seed, reshuffle_each_iteration=True)
    indices = indices.batch(batch_size, drop_remainder=drop_remainder)
    return indices.map(lambda i: (tf.gather(images, i), tf.gather(labels, i)),
                       num_parallel_calls=tf.data.AUTOTUNE)


def _to_float(images, labels):
    if images.dtype == tf.uint8:
        images = tf.cast(images, tf.float32) / 255.0
    return tf.cast(images, tf.float32), tf.cast(labels, tf.int32)


def _augmented(dataset, seed):
    # One stateless seed pair per batch from a seeded random stream: the same
    # `seed` gives the same crops and flips, and each epoch gets new ones.
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip((dataset, seeds)).map(
        lambda batch, pair: (random_crop_flip(batch[0], pair), batch[1]),
        num_parallel_calls=tf.data.AUTOTUNE)


def random_crop_flip(images, seed, padding=_CROP_PADDING):
    """Randomly crop after zero padding, then randomly flip left-right.

    The standard CIFAR-10 augmentation, done per image on a whole batch at
    once with stateless random ops.

    Args:
        images: Float tensor (batch, height, width, channels).
        seed: Shape (2,) integer tensor for the stateless random ops.
        padding: Pixels of zero padding on each side before cropping back to
            the original size.

    Returns:
        A tensor of the same shape and value range as `images`.

    Example:

    >>> x = tf.random.uniform((8, 32, 32, 3))
    >>> random_crop_flip(x, seed=tf.constant([1, 2])).shape
    TensorShape([8, 32, 32, 3])
    """
    crop_seed, row_seed, flip_seed = tf.unstack(tf.random.split(seed, 3))
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    padded = tf.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
    top = tf.random.stateless_uniform([batch], row_seed, 0, 2 * padding + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform([batch], crop_seed, 0, 2 * padding + 1,
                                       dtype=tf.int32)
    rows = top[:, None] + tf.range(height)[None, :]
    cols = left[:, None] + tf.range(width)[None, :]
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    cropped = tf.gather(cropped, cols, axis=2, batch_dims=1)
    flip = tf.random.stateless_uniform([batch], flip_seed) < 0.5
    out = tf.where(flip[:, None, None, None], tf.reverse(cropped, axis=[2]), cropped)
    return tf.ensure_shape(out, images.shape)
