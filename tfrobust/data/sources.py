"""Where images come from: the bundled sample, tfds, `.npz` files, TFRecord files, folders.

`resolve` turns the `data` argument of `tfrobust.data.load` (a name or a
path) into a `Source`; the other functions read one kind of source. The
pipeline itself (shuffling, batching, augmentation) lives in `datasets.py`.
"""

import collections
import dataclasses
import functools
import importlib.resources
import os
import pathlib

import numpy as np
import tensorflow as tf

from tfrobust.data import folders
from tfrobust.utils.validation import check_choice, check_images, check_labels

BUNDLED_NAME = "mnist-sample"
BUNDLED_FILE = "mnist_sample.npz"
BUNDLED_CLASSES = 10  # the sample's metadata: it is MNIST (MNIST_SAMPLE.md)
#: The samples bundled in the package: name -> (file, number of classes). CIFAR10_SAMPLE.md
#: and MNIST_SAMPLE.md say what each holds and where it comes from.
BUNDLED = {BUNDLED_NAME: (BUNDLED_FILE, BUNDLED_CLASSES),
           "cifar10-sample": ("cifar10_sample.npz", 10)}
# The splits each tfds dataset offers; checked here so that a typo in `split`
# is a ValueError and not mistaken for missing data.
TFDS_SPLITS = {
    "mnist": ("train", "test"),
    "fashion_mnist": ("train", "test"),
    "cifar10": ("train", "test"),
    "svhn_cropped": ("train", "test", "extra"),
}
ARRAY_SPLITS = ("train", "test")
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
TFRECORD_SUFFIX = ".tfrecord"
_PATH_SUFFIXES = (".npz", ".tfrecord", ".tfrecords")
_FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64),
}
_OFFLINE_HINT = (
    "Offline alternatives: data='mnist-sample' (10,000 training and 2,000 test "
    "MNIST images bundled with tfrobust), data='cifar10-sample' (200 training and 200 test "
    "CIFAR-10 images, bundled too), a Keras-layout .npz file with x_train, "
    "y_train, x_test, y_test (e.g. data='mnist.npz', as keras.datasets writes it), "
    "or TFRecord files with the tfds schema image/label (e.g. data='cifar10/', a "
    "directory holding <split>.tfrecord files)."
)

Source = collections.namedtuple("Source", ["kind", "name", "path"])


class DataUnavailableError(RuntimeError):
    """A tensorflow-datasets dataset is neither prepared locally nor downloadable.

    Raised from the tfds error (see `__cause__`); the message lists the
    offline alternatives (`"mnist-sample"`, `.npz` files, TFRecord files).
    """


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset before seeing it.

    Attributes:
        name: The dataset name, or the path as given for file sources.
        image_shape: `(height, width, channels)` of one image.
        num_classes: Number of classes (labels are `0 .. num_classes - 1`), from
            the data's metadata or given (`info(..., num_classes=)`); never guessed
            from the labels.
        source: One of `"bundled"`, `"tfds"`, `"npz"`, `"tfrecord"`, `"folder"`.
        classes_in_train: How many of the classes the training split has examples
            of, where counted (`.npz` and TFRecord files, the bundled sample); else None.

    Example:

    >>> meta = tfrobust.data.info("mnist-sample")
    >>> meta.image_shape, meta.num_classes
    ((28, 28, 1), 10)
    """

    name: str
    image_shape: tuple
    num_classes: int
    source: str
    classes_in_train: int = None


def known_names():
    return tuple(BUNDLED) + tuple(TFDS_SPLITS)


def resolve(data):
    """Turn a dataset name or a path into a `Source`."""
    if isinstance(data, str) and data.lower() in known_names():
        name = data.lower()
        return Source("bundled" if name in BUNDLED else "tfds", name, None)
    if not isinstance(data, (str, os.PathLike)):
        raise TypeError(
            "Expected data to be a dataset name or a path. "
            f"Received: data={data!r} of type {type(data).__name__}"
        )
    text = os.fspath(data)
    path = pathlib.Path(text).expanduser()
    if path.is_dir():
        if not any(path.glob(f"*{TFRECORD_SUFFIX}")) and folders.folder_layout(path):
            return Source("folder", text, path)
        return Source("tfrecord", text, path)
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return Source("npz", text, path)
        # tfds shards are named like "mnist-train.tfrecord-00000-of-00001".
        if ".tfrecord" in path.name.lower():
            return Source("tfrecord", text, path)
    looks_like_path = (isinstance(data, os.PathLike) or os.sep in text or "/" in text
                       or path.suffix.lower() in _PATH_SUFFIXES)
    if looks_like_path and not path.exists():
        raise FileNotFoundError(
            "Expected data to be an existing .npz file, TFRecord file, directory of "
            f"TFRecord files or image folder. Received: data={text!r}, which does not exist."
        )
    raise ValueError(
        f"Expected data to be one of {sorted(known_names())} or a path to a .npz "
        f"file or TFRecord files. Received: data={text!r}"
    )


def check_split(source, split):
    """Check `split` for `source` and return it (lowercased where names are fixed)."""
    if not isinstance(split, str) or not split.strip():
        raise ValueError(f"Expected split to be a non-empty string. Received: split={split!r}")
    if source.kind in ("bundled", "npz", "folder"):
        return check_choice("split", split, ARRAY_SPLITS)
    if source.kind == "tfds":
        allowed = TFDS_SPLITS[source.name]
        if any(part not in allowed for part in split_names(split)):
            raise ValueError(
                f"Expected split to be one of {sorted(allowed)} for data={source.name!r} "
                "(tfds slicing such as 'train[:10%]' or 'train+test' is allowed). "
                f"Received: split={split!r}"
            )
        return split.strip().lower()
    if source.path.is_dir() and (os.sep in split or "/" in split):
        raise ValueError(
            f"Expected split to be a file stem such as 'train'. Received: split={split!r}"
        )
    return split


def split_names(split):
    """The base split names in a tfds split string: 'train[:10%]+test' -> ['train', 'test']."""
    return [part.split("[")[0].strip().lower() for part in split.split("+")]


def _file_key(paths):
    # Keyed on size and mtime too, so rewriting a file in place is noticed.
    return tuple((str(p.resolve()), p.stat().st_mtime_ns, p.stat().st_size) for p in paths)


# ----------------------------------------------------------------------------
# In-memory sources: the bundled sample and Keras-layout .npz files.

def _check_npz_images(images, name):
    """Return images of rank 4, uint8 (kept for later /255) or float32 in [0, 1]."""
    array = np.asarray(images)
    if array.ndim == 3:
        array = array[..., None]
    if array.dtype == np.uint8:
        if array.ndim != 4:
            raise ValueError(
                "Expected images of shape (N, H, W) or (N, H, W, C). "
                f"Received: {name} with shape {array.shape}"
            )
        return array
    if np.issubdtype(array.dtype, np.floating):
        return check_images(array, name)
    raise ValueError(
        "Expected uint8 images (0-255) or floating-point images in [0, 1]. "
        f"Received: {name} of dtype {array.dtype}"
    )


def _check_npz_arrays(raw):
    arrays = {}
    for split in ARRAY_SPLITS:
        arrays[f"x_{split}"] = _check_npz_images(raw[f"x_{split}"], f"x_{split}")
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise ValueError(
            "Expected training and test images of the same shape. Received: "
            f"x_train with shape {arrays['x_train'].shape} and x_test with shape "
            f"{arrays['x_test'].shape}"
        )
    num_classes = raw.get("num_classes")
    for split in ARRAY_SPLITS:
        arrays[f"y_{split}"] = check_labels(raw[f"y_{split}"], num_classes, f"y_{split}",
                                            num_examples=len(arrays[f"x_{split}"]))
    return arrays, num_classes


def _declared_classes(npz, name):
    """The `num_classes` entry of an .npz file (a whole number >= 2), or None."""
    if "num_classes" not in npz.files:
        return None
    value = _npz_array(npz, "num_classes", name)
    if value.shape not in ((), (1,)) or not np.issubdtype(value.dtype, np.integer) \
            or int(value.reshape(())) < 2:
        raise ValueError(f"Expected the num_classes entry of data={name!r} to be one integer "
                         f">= 2. Received: {value.tolist()!r} of dtype {value.dtype}")
    return int(value.reshape(()))


def _npz_array(npz, key, name):
    """`npz[key]`, or a ValueError naming the file and key (object arrays need pickle,
    which is never allowed: loading one could run code)."""
    try:
        return npz[key]
    except ValueError as error:
        raise ValueError(f"Expected numeric arrays in data={name!r}. Received: key {key!r}, "
                         f"which NumPy cannot load without pickle ({error}); save images "
                         "and labels as uint8/float and integer arrays") from None


def _arrays_from_npz(file, name):
    with np.load(file, allow_pickle=False) as npz:
        missing = [key for key in NPZ_KEYS if key not in npz.files]
        if missing:
            raise ValueError(
                f"Expected a Keras-layout .npz file with keys {list(NPZ_KEYS)}. "
                f"Received: data={name!r} with keys {sorted(npz.files)}"
            )
        raw = {key: _npz_array(npz, key, name) for key in NPZ_KEYS}
        raw["num_classes"] = _declared_classes(npz, name)
    try:
        arrays, num_classes = _check_npz_arrays(raw)
    except ValueError as error:
        raise ValueError(f"{error} In data={name!r}.") from None
    for array in arrays.values():
        # Shared through the caches below: nobody may change them in place.
        array.flags.writeable = False
    return arrays, num_classes


@functools.lru_cache(maxsize=len(BUNDLED))
def _bundled_arrays(name):
    file_name, num_classes = BUNDLED[name]
    resource = importlib.resources.files(__package__).joinpath(file_name)
    with resource.open("rb") as file:
        arrays, _ = _arrays_from_npz(file, name)
    return arrays, num_classes


@functools.lru_cache(maxsize=2)
def _npz_arrays_cached(key, name):
    return _arrays_from_npz(key[0][0], name)


def read_arrays(source):
    """Return `(arrays, num_classes)` for a bundled or npz source.

    `arrays` maps `x_train y_train x_test y_test` to read-only NumPy arrays:
    images (N, H, W, C) uint8 or float32 in [0, 1], labels int32. `num_classes`
    is what the data declares (the file's `num_classes` entry), or None.
    """
    if source.kind == "bundled":
        return _bundled_arrays(source.name)
    return _npz_arrays_cached(_file_key([source.path]), source.name)


# ----------------------------------------------------------------------------
# TFRecord files with the tfds schema: `image` (PNG/JPEG bytes), `label` int64.

def tfrecord_files(source, split=None):
    """The TFRecord files of `source` for `split` (all of them when `split` is None)."""
    path = source.path
    if not path.is_dir():
        return [path]
    files = sorted(path.glob(f"*{TFRECORD_SUFFIX}"))
    if not files:
        present = sorted(p.name for p in path.iterdir())[:10]
        raise FileNotFoundError(
            f"Expected <split>{TFRECORD_SUFFIX} files in the directory, or an image "
            f"folder: {folders.FOLDER_LAYOUTS}. Received: data={source.name!r} with neither "
            f"(it holds {present})."
        )
    if split is None:
        return files
    expected = path / f"{split}{TFRECORD_SUFFIX}"
    if not expected.is_file():
        present = sorted(p.name for p in path.iterdir())
        raise FileNotFoundError(
            f"Expected the file {str(expected)!r} for split={split!r}. "
            f"Received: data={source.name!r} holding {present}"
        )
    return [expected]


def _schema_error(source, error):
    return ValueError(
        "Expected TFRecord files of tf.train.Example with features 'image' (PNG or "
        f"JPEG bytes) and 'label' (int64). Received: data={source.name!r} "
        f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
    )


def _first_image_shape(source, files):
    records = tf.data.TFRecordDataset([str(f) for f in files]).take(1)
    try:
        for record in records:
            example = tf.io.parse_single_example(record, _FEATURES)
            image = tf.io.decode_image(example["image"], expand_animations=False)
            return tuple(int(d) for d in image.shape)
    except (tf.errors.OpError, ValueError) as error:
        raise _schema_error(source, error) from error
    raise ValueError(f"Expected at least one record. Received: data={source.name!r} is empty")


def tfrecord_dataset(source, files):
    """Return `(dataset of serialized records, decode_fn, image_shape)`.

    Records are left serialized so shuffling moves small strings, not pixels;
    `decode_fn` maps one record to `(uint8 image (H, W, C), int32 label)`.
    """
    shape = _first_image_shape(source, files)

    def decode(record):
        example = tf.io.parse_single_example(record, _FEATURES)
        image = tf.io.decode_image(example["image"], channels=shape[-1],
                                   expand_animations=False)
        return tf.ensure_shape(image, shape), tf.cast(example["label"], tf.int32)

    records = tf.data.TFRecordDataset([str(f) for f in files])
    return records, decode, shape


@functools.lru_cache(maxsize=32)
def _tfrecord_info_cached(key, name):
    files = [pathlib.Path(entry[0]) for entry in key]
    source = Source("tfrecord", name, files[0])
    shape = _first_image_shape(source, files)
    return DatasetInfo(name, shape, None, "tfrecord")


@functools.lru_cache(maxsize=32)
def _tfrecord_label_counts_cached(key, name):
    """Examples per label in the one file of `key` (cached: a directory's splits are
    counted once each, whether asked for alone or together)."""
    files = [str(entry[0]) for entry in key]
    labels = (tf.data.TFRecordDataset(files)
              .batch(4096)
              .map(lambda r: tf.io.parse_example(r, {"label": _FEATURES["label"]})["label"],
                   num_parallel_calls=tf.data.AUTOTUNE))
    counts = np.zeros(0, np.int64)
    try:
        for batch in labels.as_numpy_iterator():
            if batch.size and batch.min() < 0:
                raise ValueError(f"Expected class labels >= 0. Received: data={name!r} "
                                 f"with a label {int(batch.min())}")
            counts = _add_counts(counts, np.bincount(batch))
    except tf.errors.OpError as error:
        raise _schema_error(Source("tfrecord", name, files[0]), error) from error
    return counts


def tfrecord_label_counts(source, split=None):
    """Examples per label over the TFRecord files of `source` (of `split`, if given):
    one label-only pass, cached per file in this process."""
    counts = np.zeros(0, np.int64)
    for file in tfrecord_files(source, split):
        counts = _add_counts(counts, _tfrecord_label_counts_cached(_file_key([file]),
                                                                   source.name))
    return counts


def _add_counts(counts, more):
    """The sum of two per-label count vectors of any lengths."""
    total = np.zeros(max(len(counts), len(more)), np.int64)
    total[:len(counts)] += counts
    total[:len(more)] += more
    return total


def tfrecord_info(source):
    """`DatasetInfo` from the first record; `num_classes` None (TFRecords do not say)."""
    return _tfrecord_info_cached(_file_key(tfrecord_files(source)), source.name)


# ----------------------------------------------------------------------------
# Image folders (read in folders.py).

def folder_info(source, image_size=None):
    """`DatasetInfo` of an image folder: the first image's size (or `image_size`) and
    channels (grayscale: 1, else 3), and one class per class folder."""
    shape, classes = folders.folder_image_shape(source.path, image_size)
    return DatasetInfo(source.name, shape, len(classes), "folder")


# ----------------------------------------------------------------------------
# tensorflow-datasets.

def _unavailable(name, data_dir, error):
    where = f" in data_dir={str(data_dir)!r}" if data_dir is not None else ""
    detail = str(error).splitlines()[0] if str(error) else type(error).__name__
    return DataUnavailableError(
        f"Dataset {name!r} is not available from tensorflow-datasets{where}: it is not "
        f"prepared there and could not be downloaded ({detail}). {_OFFLINE_HINT}"
    )


def _import_tfds(name, data_dir):
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise _unavailable(name, data_dir, error) from error
    return tfds


def tfds_dataset(source, split, *, data_dir=None, download=True, shuffle_files=False,
                 seed=0):
    """`tfds.load(..., as_supervised=True)`: uint8 (H, W, C) images, int64 labels."""
    tfds = _import_tfds(source.name, data_dir)
    kwargs = {}
    if shuffle_files:
        kwargs["read_config"] = tfds.ReadConfig(shuffle_seed=seed)
    try:
        return tfds.load(source.name, split=split, as_supervised=True,
                         data_dir=None if data_dir is None else os.fspath(data_dir),
                         download=download, shuffle_files=shuffle_files, **kwargs)
    except Exception as error:  # tfds reports missing data with many types.
        raise _unavailable(source.name, data_dir, error) from error


def tfds_info(source, data_dir=None):
    """`DatasetInfo` from the tfds builder's feature spec (no data needed)."""
    tfds = _import_tfds(source.name, data_dir)
    try:
        builder = tfds.builder(source.name,
                               data_dir=None if data_dir is None else os.fspath(data_dir))
        features = builder.info.features
        shape = tuple(int(d) for d in features["image"].shape)
        num_classes = int(features["label"].num_classes)
    except Exception as error:  # as in tfds_dataset: any failure means no data.
        raise _unavailable(source.name, data_dir, error) from error
    return DatasetInfo(source.name, shape, num_classes, "tfds")
