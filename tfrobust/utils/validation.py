"""Argument and data checks shared by every public entry point.

Every check raises `ValueError` (or `TypeError` for a wrong type) with a
message of the form ``Expected <what>. Received: <name>=<value>`` so a user
sees the argument and the value at fault, not a stack trace from deep inside
TensorFlow.
"""

import collections.abc
import numbers

import numpy as np

# Pixel values a little above 1 come from resizing/JPEG round-off; 0-255 data
# is far outside this.
_RANGE_TOLERANCE = 1e-3


def check_number(name, value, minimum=None, maximum=None, *, integer=False,
                 strict_minimum=False):
    """Check a scalar hyperparameter and return it as a Python number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"Expected {name} to be a {'whole ' if integer else ''}number. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    if isinstance(value, numbers.Integral):
        pass  # Python integers are exact at any size (np.isfinite refuses the huge ones)
    elif not np.isfinite(value):
        raise ValueError(f"Expected {name} to be finite. Received: {name}={value!r}")
    if integer and int(value) != value:
        raise ValueError(f"Expected {name} to be a whole number. Received: {name}={value!r}")
    if minimum is not None:
        if strict_minimum and value <= minimum:
            raise ValueError(f"Expected {name} > {minimum}. Received: {name}={value!r}")
        if not strict_minimum and value < minimum:
            raise ValueError(f"Expected {name} >= {minimum}. Received: {name}={value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"Expected {name} <= {maximum}. Received: {name}={value!r}")
    return int(value) if integer else float(value)


def check_choice(name, value, choices):
    """Check that `value` is one of `choices` (case-insensitive for strings)."""
    key = value.lower() if isinstance(value, str) else value
    if not isinstance(key, collections.abc.Hashable) or key not in choices:
        raise ValueError(
            f"Expected {name} to be one of {sorted(choices)}. Received: {name}={value!r}"
        )
    return key


def check_images(images, name="x", *, clip_min=0.0, clip_max=1.0):
    """Check a NumPy batch of images: rank 4 (batch, height, width, channels),
    floating point, finite, and inside [clip_min, clip_max].

    Returns the images as a float32 array.
    """
    array = np.asarray(images)
    if array.ndim != 4:
        hint = ""
        if array.ndim == 3:
            hint = (" Grayscale images need a channel axis: use x[..., None] "
                    "(tfrobust.data does this for you).")
        raise ValueError(
            "Expected images of rank 4 (batch, height, width, channels). "
            f"Received: {name} with shape {array.shape}.{hint}"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            f"Expected floating-point images in [{clip_min}, {clip_max}]. "
            f"Received: {name} of dtype {array.dtype}. Convert with "
            "x.astype('float32') / 255 for 8-bit images."
        )
    if array.size:
        if not np.all(np.isfinite(array)):
            raise ValueError(
                f"Expected finite pixel values. Received: {name} with "
                f"{int(np.sum(~np.isfinite(array)))} NaN or infinite values."
            )
        lo, hi = float(array.min()), float(array.max())
        if lo < clip_min - _RANGE_TOLERANCE or hi > clip_max + _RANGE_TOLERANCE:
            hint = " Divide 0-255 images by 255." if hi > 2.0 else ""
            raise ValueError(
                f"Expected pixel values in [{clip_min:g}, {clip_max:g}]. Received: "
                f"{name} with values in [{lo:g}, {hi:g}].{hint}"
            )
    return array.astype(np.float32, copy=False)


def check_labels(labels, num_classes=None, name="y", num_examples=None):
    """Check integer class labels of shape (batch,) or (batch, 1).

    Returns the labels as a flat int32 array.
    """
    array = np.asarray(labels)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(
            "Expected integer class labels of shape (batch,). "
            f"Received: {name} with shape {np.asarray(labels).shape} (one-hot "
            "labels can be converted with y.argmax(-1))."
        )
    if np.issubdtype(array.dtype, np.floating):
        if array.size and not np.all(array == np.round(array)):
            raise ValueError(
                f"Expected integer class labels. Received: {name} of dtype "
                f"{array.dtype} with non-integer values."
            )
    elif not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"Expected integer class labels. Received: {name} of dtype {array.dtype}")
    if num_examples is not None and array.shape[0] != num_examples:
        raise ValueError(
            f"Expected one label per image ({num_examples}). Received: {name} "
            f"with {array.shape[0]} labels."
        )
    if array.size:
        lo, hi = int(array.min()), int(array.max())
        if lo < 0 or (num_classes is not None and hi >= num_classes):
            bound = f"[0, {num_classes - 1}]" if num_classes is not None else ">= 0"
            raise ValueError(
                f"Expected class labels in {bound}. Received: {name} with "
                f"values in [{lo}, {hi}]."
            )
    return array.astype(np.int32, copy=False)
