"""Checks on the data given to `RobustModel.fit` and `evaluate`.

Two layers: `check_fit_data` looks at values in Python before Keras starts
(whole NumPy arrays; the first batch of a `tf.data.Dataset`), and
`check_batch_spec` looks at static shapes and dtypes while `train_step`
is traced, which costs nothing per step and works under XLA;
`check_batch_values` refuses non-finite pixels in every batch.
"""

import numpy as np
import tensorflow as tf

from tfrobust.utils import validation


def check_batch_spec(x, y):
    """Trace-time checks of one batch; returns `x` as float32."""
    if isinstance(x, (dict, list, tuple)):
        raise ValueError(
            "Expected a single image tensor per batch. "
            f"Received: x of type {type(x).__name__}"
        )
    if x.shape.rank is not None and x.shape.rank != 4:
        raise ValueError(
            "Expected images of rank 4 (batch, height, width, channels). "
            f"Received: x with shape {tuple(x.shape)}"
        )
    if not x.dtype.is_floating:
        raise ValueError(
            "Expected floating-point images in [0, 1]. Received: x of dtype "
            f"{x.dtype.name}. Convert 8-bit images with tf.cast(x, tf.float32) / 255."
        )
    rank = y.shape.rank
    if rank is not None and (rank > 2 or (rank == 2 and y.shape[-1] not in (1, None))):
        raise ValueError(
            "Expected integer class labels of shape (batch,). Received: y with shape "
            f"{tuple(y.shape)} (one-hot labels can be converted with argmax)."
        )
    return tf.cast(x, tf.float32)


def check_batch_values(x):
    """Run-time check that a batch's pixels are finite; returns `x`.

    One NaN pixel makes every weight NaN after one step, so each training and
    test batch is checked (`check_fit_data` sees only the first batch of a
    dataset). XLA compiles the check away (`jit_compile=True`, the default on
    GPU): there only the first batch is checked.
    """
    return tf.debugging.check_numerics(
        x, "Expected finite pixel values. Received: a batch of x with NaN or infinite values")


def _first_batch(dataset):
    for element in dataset.take(1):
        return element
    return None


def check_fit_data(model, x, y, name):
    """Value checks before `fit`/`evaluate` starts; raise ValueError with the culprit.

    NumPy inputs are checked whole. A `tf.data.Dataset` is checked on its
    first batch (peeking costs one batch of the input pipeline); later batches
    are covered by the static checks in `train_step`.

    Returns:
        The size of the first batch of a dataset, or None for arrays and generators.
    """
    num_classes = model.num_classes if model.built or _head_width_known(model) else None
    if isinstance(x, tf.data.Dataset):
        element = _first_batch(x)
        if element is None:
            raise ValueError(f"Expected a non-empty dataset. Received: {name} with no batches")
        if not isinstance(element, (tuple, list)) or len(element) < 2:
            raise ValueError(
                f"Expected {name} to yield (images, labels) batches. "
                f"Received: elements of type {type(element).__name__}"
            )
        images, labels = element[0], element[1]
        where = f"{name} (first batch)"
    elif x is None or _is_generator_like(x):
        return None
    else:
        images, labels = x, y
        where = name
        if labels is None:
            raise ValueError(f"Expected labels with the images. Received: y=None for {name}")
    images = np.asarray(images)
    if images.size == 0 or images.shape[:1] == (0,):
        raise ValueError("Expected at least one image. "
                         f"Received: {where} with shape {images.shape}")
    validation.check_images(images, where)
    validation.check_labels(np.asarray(labels), num_classes, name=f"labels of {where}",
                            num_examples=images.shape[0])
    return images.shape[0] if isinstance(x, tf.data.Dataset) else None


def check_attack_budgets(model):
    """Refuse an L2 epsilon beyond the diameter of the image box, which reaches every image.

    (An L-inf epsilon beyond the pixel range is refused by the attack itself.)
    """
    shape = tuple(getattr(model.backbone, "input_shape", (None,))[1:])
    if not shape or any(d is None for d in shape):
        return
    for name in ("attack", "eval_attack"):
        attack = getattr(model, name, None)
        if attack is None or getattr(attack, "norm", None) != "l2":
            continue
        diameter = (attack.clip_max - attack.clip_min) * float(np.sqrt(np.prod(shape)))
        if attack.epsilon > diameter:
            raise ValueError(
                f"Expected the {name}'s epsilon <= {diameter:g}, the L2 diameter of "
                f"[{attack.clip_min:g}, {attack.clip_max:g}]^{shape}, for the l2 norm. "
                f"Received: epsilon={attack.epsilon!r}")


def _head_width_known(model):
    return getattr(model.head, "units", None) is not None


def _is_generator_like(x):
    return not isinstance(x, (np.ndarray, tf.Tensor, list, tuple)) and hasattr(x, "__iter__")
