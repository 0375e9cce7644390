"""Image folders: one subfolder per class of PNG or JPEG files, read by Keras.

`folder_layout` tells whether a directory is one (`sources.resolve` asks it), the
rest reads it. Paths in, shapes and `tf.data` pipelines out: `sources.folder_info`
makes the `DatasetInfo`.
"""

import contextlib
import io
import pathlib

import tensorflow as tf

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FOLDER_TEST_FRACTION = 0.1
FOLDER_SPLIT_SEED = 0
FOLDER_LAYOUTS = (
    "DIR/train/<class>/*.png|jpg with DIR/test/<class>/... for the test split, or "
    f"DIR/<class>/*.png|jpg (optionally with DIR/test/<class>/...; without it a seeded "
    f"{FOLDER_TEST_FRACTION:.0%} of the images is held out as the test split)"
)


def _class_folders(root, exclude=()):
    """The subfolders of `root` holding at least one image, sorted by name."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and p.name not in exclude
                  and any(f.suffix.lower() in IMAGE_SUFFIXES for f in p.iterdir()))


def folder_layout(path):
    """`(train_root, test_root or None, class names)` of an image folder, or None."""
    path = pathlib.Path(path)
    if _class_folders(path / "train"):
        train_root, exclude = path / "train", ()
    else:
        train_root, exclude = path, ("test", "train")
    classes = _class_folders(train_root, exclude)
    if not classes:
        return None
    test_root = path / "test" if _class_folders(path / "test") else None
    if test_root is not None and _class_folders(test_root) != classes:
        raise ValueError(
            f"Expected the class folders of {str(test_root)!r} to be those of "
            f"{str(train_root)!r}: {classes}. Received: {_class_folders(test_root)}")
    return train_root, test_root, classes


def _first_image(root, classes):
    for name in classes:
        for file in sorted((root / name).iterdir()):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                return file


def folder_image_shape(path, image_size=None):
    """`((height, width, channels), class names)` of the image folder at `path`: the first
    image's size (or `image_size`) and channels (grayscale: 1, else 3)."""
    train_root, _, classes = folder_layout(path)
    return _image_shape(train_root, classes, image_size), classes


def _image_shape(train_root, classes, image_size):
    first = _first_image(train_root, classes)
    image = tf.io.decode_image(tf.io.read_file(str(first)), expand_animations=False)
    height, width, channels = (int(d) for d in image.shape)
    if image_size is not None:
        height, width = image_size
    return height, width, 1 if channels == 1 else 3


def folder_dataset(path, split, image_size=None):
    """`(unbatched dataset of (float32 image in [0, 1], int32 label), image_shape)`.

    Read by `keras.utils.image_dataset_from_directory`, resized (bilinear) to the
    first image's size or `image_size`. The test split is `test/` when it exists,
    else the last `FOLDER_TEST_FRACTION` of the file list Keras shuffles with
    `FOLDER_SPLIT_SEED` (the same held-out images every time). The training
    split comes in the order Keras gives it (shuffled with that seed, and again
    every epoch), so `limit` keeps a seeded subset of it rather than its first files.
    """
    import keras

    train_root, test_root, classes = folder_layout(path)
    shape = _image_shape(train_root, classes, image_size)
    options = dict(labels="inferred", label_mode="int", batch_size=None,
                   color_mode="grayscale" if shape[-1] == 1 else "rgb",
                   image_size=shape[:2], seed=FOLDER_SPLIT_SEED, verbose=False)
    # Keras prints "Using N files for training." whatever `verbose` says.
    with contextlib.redirect_stdout(io.StringIO()):
        if test_root is not None:
            root = test_root if split == "test" else train_root
            dataset = keras.utils.image_dataset_from_directory(
                str(root), class_names=classes, shuffle=split != "test", **options)
        else:
            train, test = keras.utils.image_dataset_from_directory(
                str(train_root), class_names=classes, shuffle=True, subset="both",
                validation_split=FOLDER_TEST_FRACTION, **options)
            dataset = test if split == "test" else train
    dataset = dataset.map(lambda x, y: (tf.clip_by_value(x / 255.0, 0.0, 1.0),
                                        tf.cast(y, tf.int32)))
    return dataset, shape
