"""Tests for `tfrobust.data`: the bundled sample, npz, TFRecord and tfds sources."""

import importlib.resources
import importlib.util
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from tfrobust import data
from tfrobust.data import DataUnavailableError, DatasetInfo
from tfrobust.data.datasets import random_crop_flip

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
FIRST_LABELS = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]


def _needs_shared(*parts):
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found at {path}")
    return path


def _collect(dataset):
    batches = list(dataset.as_numpy_iterator())
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def _write_npz(path, x_train, y_train, x_test, y_test):
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


@pytest.fixture(scope="module")
def rgb_npz(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("rgb") / "rgb.npz"
    return _write_npz(path, rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8),
                      rng.integers(0, 5, 40).astype(np.uint8),
                      rng.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8),
                      np.arange(12, dtype=np.uint8) % 7)


# ----------------------------------------------------------------------------
# The bundled sample.

def test_bundled_file_is_small_uint8_canonical_mnist():
    resource = importlib.resources.files("tfrobust.data").joinpath("mnist_sample.npz")
    with resource.open("rb") as file:
        raw = file.read()
    assert len(raw) < 3 * 1024 * 1024
    with resource.open("rb") as file, np.load(file) as npz:
        assert sorted(npz.files) == ["x_test", "x_train", "y_test", "y_train"]
        assert npz["x_train"].shape == (10000, 28, 28)
        assert npz["x_test"].shape == (2000, 28, 28)
        assert {npz[k].dtype for k in npz.files} == {np.dtype(np.uint8)}
        assert npz["y_train"][:10].tolist() == FIRST_LABELS
        assert np.bincount(npz["y_train"]).size == 10


def test_build_script_reproduces_the_bundled_sample(tmp_path):
    source = _needs_shared("mnist.npz")
    spec = importlib.util.spec_from_file_location(
        "build_mnist_sample", REPO / "scripts" / "build_mnist_sample.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    size = script.build(source, tmp_path / "sample.npz")
    assert size < 3 * 1024 * 1024
    with np.load(tmp_path / "sample.npz") as built, np.load(source) as full:
        bundled = importlib.resources.files("tfrobust.data").joinpath("mnist_sample.npz")
        with bundled.open("rb") as file, np.load(file) as shipped:
            for key in ("x_train", "y_train", "x_test", "y_test"):
                np.testing.assert_array_equal(built[key], shipped[key])
        np.testing.assert_array_equal(built["x_train"], full["x_train"][:10000])
        np.testing.assert_array_equal(built["y_test"], full["y_test"][:2000])


def test_sample_info_and_arrays():
    assert data.DATASETS == ("mnist-sample", "cifar10-sample", "mnist", "fashion_mnist",
                             "cifar10", "svhn_cropped")
    assert data.info("mnist-sample") == DatasetInfo("mnist-sample", (28, 28, 1), 10, "bundled", 10)
    x, y = data.load_arrays("mnist-sample")
    assert x.shape == (10000, 28, 28, 1) and x.dtype == np.float32
    assert y.shape == (10000,) and y.dtype == np.int32
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert y[:10].tolist() == FIRST_LABELS
    assert sorted(np.unique(y).tolist()) == list(range(10))
    x_test, y_test = data.load_arrays("mnist-sample", "test", limit=7)
    assert x_test.shape == (7, 28, 28, 1) and y_test.shape == (7,)
    # Pixels are exactly uint8 / 255.
    np.testing.assert_array_equal(np.round(x[:5] * 255), (x[:5] * 255))


def test_batches_have_requested_size_dtype_and_range():
    dataset = data.load("mnist-sample", batch_size=64, limit=200, shuffle=False)
    assert dataset.element_spec[0].shape.as_list() == [None, 28, 28, 1]
    sizes = []
    for images, labels in dataset:
        assert images.dtype == tf.float32 and labels.dtype == tf.int32
        assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 1.0
        sizes.append(int(images.shape[0]))
    assert sizes == [64, 64, 64, 8]
    dropped = data.load("mnist-sample", batch_size=64, limit=200, drop_remainder=True)
    assert [int(x.shape[0]) for x, _ in dropped] == [64, 64, 64]
    assert dropped.element_spec[0].shape.as_list() == [64, 28, 28, 1]


def test_unshuffled_grayscale_train_is_never_augmented_by_default():
    x, y = data.load_arrays("mnist-sample", limit=300)
    x_ds, y_ds = _collect(data.load("mnist-sample", batch_size=128, limit=300, shuffle=False))
    np.testing.assert_array_equal(x_ds, x)
    np.testing.assert_array_equal(y_ds, y)
    assert y_ds[:10].tolist() == FIRST_LABELS


def test_shuffle_is_seeded_reproducible_and_reshuffles_each_epoch():
    def labels(dataset):
        return np.concatenate([y.numpy() for _, y in dataset])

    unshuffled = labels(data.load("mnist-sample", limit=500, shuffle=False))
    first = data.load("mnist-sample", limit=500, seed=3)
    epoch1, epoch2 = labels(first), labels(first)
    again = labels(data.load("mnist-sample", limit=500, seed=3))
    other = labels(data.load("mnist-sample", limit=500, seed=4))
    np.testing.assert_array_equal(epoch1, again)
    assert not np.array_equal(epoch1, unshuffled)
    assert not np.array_equal(epoch1, other)
    assert not np.array_equal(epoch1, epoch2)
    # Only the order changes: `limit` picks the first 500 before shuffling.
    np.testing.assert_array_equal(np.sort(epoch1), np.sort(unshuffled))
    # The test split is not shuffled by default.
    _, y_test = data.load_arrays("mnist-sample", "test", limit=300)
    np.testing.assert_array_equal(labels(data.load("mnist-sample", "test", limit=300)), y_test)


def test_limit_is_respected():
    assert sum(int(y.shape[0]) for _, y in data.load("mnist-sample", batch_size=4, limit=10)) == 10
    assert data.load_arrays("mnist-sample", limit=3)[0].shape == (3, 28, 28, 1)


# ----------------------------------------------------------------------------
# Augmentation.

def _crop_flip_candidates(image, padding=4):
    h, w = image.shape[:2]
    padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
    crops = [padded[r:r + h, c:c + w] for r in range(2 * padding + 1)
             for c in range(2 * padding + 1)]
    return crops + [crop[:, ::-1] for crop in crops]


def test_rgb_train_split_is_augmented_by_default(rgb_npz):
    x, y = data.load_arrays(rgb_npz)
    x_aug, y_aug = _collect(data.load(rgb_npz, batch_size=16, shuffle=False))
    assert x_aug.shape == x.shape == (40, 16, 16, 3) and x_aug.dtype == np.float32
    assert float(x_aug.min()) >= 0.0 and float(x_aug.max()) <= 1.0
    np.testing.assert_array_equal(y_aug, y)
    changed = np.mean([not np.array_equal(a, b) for a, b in zip(x_aug, x)])
    assert changed > 0.9
    # Each output is one of the 162 padded crops (flipped or not) of its input.
    for original, augmented in zip(x[:6], x_aug[:6]):
        assert any(np.array_equal(augmented, c) for c in _crop_flip_candidates(original))
    # Same seed, same augmentation.
    x_again, _ = _collect(data.load(rgb_npz, batch_size=16, shuffle=False))
    np.testing.assert_array_equal(x_again, x_aug)


def test_augmentation_off_for_test_split_and_when_disabled(rgb_npz):
    x, _ = data.load_arrays(rgb_npz)
    np.testing.assert_array_equal(
        _collect(data.load(rgb_npz, batch_size=16, shuffle=False, augment=False))[0], x)
    x_test, y_test = data.load_arrays(rgb_npz, "test")
    x_ds, y_ds = _collect(data.load(rgb_npz, "test", batch_size=5))
    np.testing.assert_array_equal(x_ds, x_test)
    np.testing.assert_array_equal(y_ds, y_test)


def test_augment_true_forces_augmentation_on_grayscale():
    x, _ = data.load_arrays("mnist-sample", limit=64)
    x_aug, _ = _collect(data.load("mnist-sample", limit=64, shuffle=False, augment=True))
    assert x_aug.shape == (64, 28, 28, 1)
    assert np.mean([not np.array_equal(a, b) for a, b in zip(x_aug, x)]) > 0.9


def test_random_crop_flip_keeps_shape():
    images = tf.random.uniform((3, 10, 12, 2), seed=1)
    out = random_crop_flip(images, tf.constant([1, 2], tf.int64), padding=2)
    assert out.shape == (3, 10, 12, 2)


# ----------------------------------------------------------------------------
# .npz files.

def test_npz_round_trip_uint8_grayscale(tmp_path):
    rng = np.random.default_rng(1)
    x_train = rng.integers(0, 256, (20, 8, 8), dtype=np.uint8)
    x_test = rng.integers(0, 256, (6, 8, 8), dtype=np.uint8)
    path = _write_npz(tmp_path / "gray.npz", x_train, np.arange(20) % 3, x_test,
                      np.array([0, 1, 2, 3, 4, 6]))
    with pytest.raises(ValueError, match="number of classes of data=.*never guessed"):
        data.info(path)
    # Train labels 0-2 only: 3 of the 7 classes have training examples.
    assert data.info(path, num_classes=7) == DatasetInfo(str(path), (8, 8, 1), 7, "npz", 3)
    x, y = data.load_arrays(path, "test")
    np.testing.assert_array_equal(x, x_test[..., None].astype(np.float32) / 255)
    assert y.tolist() == [0, 1, 2, 3, 4, 6] and y.dtype == np.int32
    x_ds, y_ds = _collect(data.load(str(path), batch_size=8, shuffle=False))
    np.testing.assert_array_equal(x_ds, x_train[..., None].astype(np.float32) / 255)
    assert y_ds.tolist() == (np.arange(20) % 3).tolist()


def test_the_class_count_comes_from_metadata_or_is_given(tmp_path):
    x = np.zeros((4, 3, 3), np.uint8)
    path = tmp_path / "declared.npz"
    np.savez(path, x_train=x, y_train=np.array([0, 1, 1, 0]), x_test=x[:2],
             y_test=np.array([1, 0]), num_classes=np.array(10))
    assert data.info(path) == DatasetInfo(str(path), (3, 3, 1), 10, "npz", 2)
    assert data.info(path, num_classes=10).num_classes == 10
    with pytest.raises(ValueError, match="num_classes=10, as data=.* declares. Received: "
                                         "num_classes=12"):
        data.info(path, num_classes=12)
    with pytest.raises(ValueError, match="num_classes=10, as data='mnist-sample' declares"):
        data.info("mnist-sample", num_classes=12)
    with pytest.raises(ValueError, match="num_classes=1"):
        data.info(path, num_classes=1)
    np.savez(path, x_train=x, y_train=np.zeros(4, int), x_test=x, y_test=np.zeros(4, int),
             num_classes=np.array([2.5]))
    with pytest.raises(ValueError, match="num_classes entry of data=.* one integer >= 2. "
                                         r"Received: \[2.5\]"):
        data.info(path)


def test_an_object_array_names_the_file_and_key(tmp_path):
    path = tmp_path / "objects.npz"
    x = np.zeros((2, 3, 3), np.uint8)
    np.savez(path, x_train=x, y_train=np.array([{"label": 0}, {"label": 1}], dtype=object),
             x_test=x, y_test=np.zeros(2, int))
    with pytest.raises(ValueError, match="numeric arrays in data=.*objects.npz.*key 'y_train'"):
        data.info(path, num_classes=2)


def test_npz_round_trip_float_rgb(tmp_path):
    rng = np.random.default_rng(2)
    x_train = rng.random((10, 4, 4, 3), dtype=np.float32)
    x_test = rng.random((4, 4, 4, 3), dtype=np.float32)
    path = _write_npz(tmp_path / "float.npz", x_train, np.zeros(10, np.int64), x_test,
                      np.ones(4, np.int64))
    assert data.info(path, num_classes=2).num_classes == 2
    x, _ = data.load_arrays(path)
    np.testing.assert_array_equal(x, x_train)
    x_ds, _ = _collect(data.load(path, "test", batch_size=3))
    np.testing.assert_array_equal(x_ds, x_test)


@pytest.mark.parametrize("x_train, y_train, words", [
    (np.full((4, 5, 5), 200.0, np.float32), np.zeros(4, np.uint8), ["x_train", "Divide"]),
    (np.zeros((4, 5, 5), np.int64), np.zeros(4, np.uint8), ["x_train", "int64"]),
    (np.zeros((4, 5, 5), np.uint8), np.array([0, 1, -1, 2]), ["y_train", "-1"]),
    (np.zeros((4, 5, 5), np.uint8), np.zeros(3, np.uint8), ["y_train", "4"]),
])
def test_npz_bad_contents(tmp_path, x_train, y_train, words):
    path = _write_npz(tmp_path / "bad.npz", x_train, y_train,
                      np.zeros((2, 5, 5), np.uint8), np.zeros(2, np.uint8))
    with pytest.raises(ValueError) as error:
        data.load(path)
    for word in words + [str(path)]:
        assert word in str(error.value)


def test_npz_missing_keys(tmp_path):
    np.savez(tmp_path / "keys.npz", x_train=np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(ValueError, match="x_test"):
        data.load_arrays(tmp_path / "keys.npz")


# ----------------------------------------------------------------------------
# TFRecord files.

def test_cifar10_tfrecord_test_split():
    directory = _needs_shared("cifar10")
    dataset = data.load(directory, "test", batch_size=32, limit=64)
    assert dataset.element_spec[0].shape.as_list() == [None, 32, 32, 3]
    x_ds, y_ds = _collect(dataset)
    assert x_ds.shape == (64, 32, 32, 3) and x_ds.dtype == np.float32
    assert y_ds.dtype == np.int32 and 0 <= y_ds.min() and y_ds.max() <= 9
    assert 0.0 <= x_ds.min() and x_ds.max() <= 1.0
    # Test split: neither shuffled nor augmented, so equal to the arrays.
    x, y = data.load_arrays(str(directory / "test.tfrecord"), limit=64)
    np.testing.assert_array_equal(x_ds, x)
    np.testing.assert_array_equal(y_ds, y)
    assert data.info(directory / "test.tfrecord", num_classes=10) == DatasetInfo(
        str(directory / "test.tfrecord"), (32, 32, 3), 10, "tfrecord", 10)


def test_cifar10_tfrecord_train_split_is_augmented():
    directory = _needs_shared("cifar10")
    x, y = data.load_arrays(directory, "train", limit=32)
    x_aug, y_aug = _collect(data.load(directory, "train", batch_size=32, limit=32,
                                      shuffle=False))
    np.testing.assert_array_equal(y_aug, y)
    assert x_aug.shape == (32, 32, 32, 3)
    assert np.mean([not np.array_equal(a, b) for a, b in zip(x_aug, x)]) > 0.9


def test_the_cifar10_sample_is_bundled_small_and_colour():
    assert data.info("cifar10-sample") == DatasetInfo("cifar10-sample", (32, 32, 3), 10,
                                                      "bundled", 10)
    for split in ("train", "test"):
        x, y = data.load_arrays("cifar10-sample", split)
        assert x.shape == (200, 32, 32, 3) and x.dtype == np.float32 and y.dtype == np.int32
        assert 0.0 <= x.min() and x.max() <= 1.0 and set(np.unique(y)) == set(range(10))
    # Colour training data: augmented by default, as CIFAR-10 from any other source.
    x, _ = data.load_arrays("cifar10-sample", "train", limit=32)
    x_aug, _ = _collect(data.load("cifar10-sample", "train", batch_size=32, limit=32,
                                  shuffle=False))
    assert np.mean([not np.array_equal(a, b) for a, b in zip(x_aug, x)]) > 0.9


def test_the_cifar10_sample_is_the_first_images_of_the_full_files(tmp_path):
    directory = _needs_shared("cifar10")
    for split in ("train", "test"):
        x, y = data.load_arrays("cifar10-sample", split)
        x_full, y_full = data.load_arrays(directory, split, limit=200)
        np.testing.assert_array_equal(x, x_full)
        np.testing.assert_array_equal(y, y_full)
    spec = importlib.util.spec_from_file_location(
        "build_cifar10_sample", REPO / "scripts" / "build_cifar10_sample.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.build(directory, tmp_path / "sample.npz")
    bundled = importlib.resources.files("tfrobust.data").joinpath("cifar10_sample.npz")
    with np.load(tmp_path / "sample.npz") as built, bundled.open("rb") as file, \
            np.load(file) as shipped:
        for key in ("x_train", "y_train", "x_test", "y_test"):
            np.testing.assert_array_equal(built[key], shipped[key])


def _write_tfrecord(path, images, labels, image_key="image"):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for image, label in zip(images, labels):
            encoded = tf.io.encode_png(image).numpy()
            feature = {
                image_key: tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
            }
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())
    return path


def test_tfrecord_directory_png_grayscale(tmp_path):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (9, 6, 5, 1), dtype=np.uint8)
    _write_tfrecord(tmp_path / "train.tfrecord", images, [0, 1, 2, 3, 0, 1, 2, 3, 0])
    _write_tfrecord(tmp_path / "test.tfrecord", images[:2], [5, 1])
    with pytest.raises(ValueError, match="tfrecord data that does not say .*from 0 to 5"):
        data.info(tmp_path)
    with pytest.raises(ValueError, match="labels below num_classes=5.*up to 5"):
        data.info(tmp_path, num_classes=5)
    # The training file has labels 0-3: 4 of the 6 classes.
    assert data.info(tmp_path, num_classes=6) == DatasetInfo(str(tmp_path), (6, 5, 1), 6,
                                                             "tfrecord", 4)
    x, y = data.load_arrays(tmp_path, "train")
    np.testing.assert_array_equal(x, images.astype(np.float32) / 255)
    assert y.tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 0]
    # Grayscale train split: shuffled but never augmented.
    x_ds, y_ds = _collect(data.load(tmp_path, batch_size=4))
    order = np.argsort([np.flatnonzero((x == img).all(axis=(1, 2, 3)))[0] for img in x_ds])
    np.testing.assert_array_equal(x_ds[order], x)
    assert data.load_arrays(tmp_path, "test")[1].tolist() == [5, 1]


def test_tfrecord_wrong_schema(tmp_path):
    path = _write_tfrecord(tmp_path / "odd.tfrecord", np.zeros((2, 4, 4, 1), np.uint8),
                           [0, 1], image_key="pixels")
    with pytest.raises(ValueError, match="'image'"):
        data.info(path)
    with pytest.raises(ValueError, match="'image'"):
        data.load(path)


def test_tfrecord_directory_without_split_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="test.tfrecord"):
        data.load(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="tfrecord"):
        data.info(tmp_path)


# ----------------------------------------------------------------------------
# Bad arguments.

@pytest.mark.parametrize("kwargs, error, name", [
    ({"data": "foo"}, ValueError, "data='foo'"),
    ({"data": "no/such/dir"}, FileNotFoundError, "no/such/dir"),
    ({"data": "missing.npz"}, FileNotFoundError, "missing.npz"),
    ({"data": 123}, TypeError, "data=123"),
    ({"data": "mnist-sample", "split": "validation"}, ValueError, "split="),
    ({"data": "mnist-sample", "split": None}, ValueError, "split="),
    ({"data": "mnist", "split": "val"}, ValueError, "split="),
    ({"data": "mnist-sample", "batch_size": 0}, ValueError, "batch_size"),
    ({"data": "mnist-sample", "batch_size": -4}, ValueError, "batch_size"),
    ({"data": "mnist-sample", "batch_size": 2.5}, ValueError, "batch_size"),
    ({"data": "mnist-sample", "batch_size": "32"}, TypeError, "batch_size"),
    ({"data": "mnist-sample", "batch_size": True}, TypeError, "batch_size"),
    ({"data": "mnist-sample", "limit": 0}, ValueError, "limit"),
    ({"data": "mnist-sample", "shuffle": "yes"}, TypeError, "shuffle"),
    ({"data": "mnist-sample", "augment": 1}, TypeError, "augment"),
    ({"data": "mnist-sample", "drop_remainder": None}, TypeError, "drop_remainder"),
])
def test_bad_arguments(kwargs, error, name):
    with pytest.raises(error) as caught:
        data.load(**kwargs)
    assert name in str(caught.value)


def test_unknown_name_lists_the_choices():
    with pytest.raises(ValueError) as caught:
        data.info("foo")
    message = str(caught.value)
    assert "mnist-sample" in message and "cifar10" in message and ".npz" in message
    with pytest.raises(ValueError, match="split="):
        data.load_arrays("mnist-sample", "valid")


# ----------------------------------------------------------------------------
# tensorflow-datasets (never the network: mocked, or download=False).

def test_tfds_mock_data_shapes():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=10):
        images, labels = next(iter(data.load("mnist", batch_size=4)))
        assert images.shape == (4, 28, 28, 1) and images.dtype == tf.float32
        assert labels.shape == (4,) and labels.dtype == tf.int32
        assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 1.0
        assert 0 <= int(tf.reduce_min(labels)) and int(tf.reduce_max(labels)) <= 9
        cifar = data.load("cifar10", "test", batch_size=5, limit=5)
        assert [tuple(x.shape) for x, _ in cifar] == [(5, 32, 32, 3)]
        x, y = data.load_arrays("fashion_mnist", "test")
        assert x.shape == (10, 28, 28, 1) and y.shape == (10,)
        # Train split of RGB data: shuffled and augmented, same shapes and range.
        augmented = _collect(data.load("cifar10", "train[:50%]", batch_size=5, limit=5))[0]
        assert augmented.shape == (5, 32, 32, 3)
        assert 0.0 <= augmented.min() and augmented.max() <= 1.0
    assert data.info("cifar10") == DatasetInfo("cifar10", (32, 32, 3), 10, "tfds")
    assert data.info("svhn_cropped").image_shape == (32, 32, 3)


def test_tfds_unavailable_offline(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(DataUnavailableError) as caught:
        data.load("mnist", data_dir=tmp_path, download=False)
    message = str(caught.value)
    assert "'mnist'" in message and "mnist-sample" in message and ".npz" in message
    assert "TFRecord" in message
    assert caught.value.__cause__ is not None
    assert isinstance(caught.value, RuntimeError)


def test_tfds_builders_prepare_up_to_the_download(tmp_path, monkeypatch):
    """A fresh install can prepare a tfds dataset: everything before the download runs (the
    builder once failed first on `No module named 'importlib_resources'`, which tfds does not
    declare). The download itself is replaced by an error, as it would fail offline."""
    tfds = pytest.importorskip("tensorflow_datasets")

    class Offline(ConnectionError):
        pass

    def offline(self, *args, **kwargs):
        raise Offline("the test's stand-in for the network")

    for method in ("download", "download_and_extract"):
        monkeypatch.setattr(tfds.download.DownloadManager, method, offline)
    for name in ("mnist", "cifar10"):
        builder = tfds.builder(name, data_dir=str(tmp_path))
        with pytest.raises(Offline):
            builder.download_and_prepare()
