"""The inference model as a TensorFlow Serving SavedModel: signatures for arrays and image bytes."""

import dataclasses
import os

import keras
import tensorflow as tf

from tfrobust.export import versions
from tfrobust.models.loading import load_model
from tfrobust.utils import validation

SERVING_DEFAULT = "serving_default"
SERVING_BYTES = "serving_bytes"
IMAGES = "images"
IMAGE_BYTES = "image_bytes"
OUTPUTS = ("logits", "probabilities", "classes")
# Channel counts that `tf.io.decode_image` produces from both PNG and JPEG.
_DECODABLE_CHANNELS = (1, 3)
# Pixel values a little outside [0, 1] come from resizing or JPEG round-off.
_RANGE_TOLERANCE = 1e-3
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# `serving_bytes` refuses an image of more pixels than this (read from its header, before
# any decoding) unless export says otherwise: 4096 x 4096, or 64 model inputs if larger.
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096


def default_max_image_pixels(image_shape):
    """The decoded-size limit of `serving_bytes` for a model input of `image_shape`."""
    return max(DEFAULT_MAX_IMAGE_PIXELS, 64 * int(image_shape[0]) * int(image_shape[1]))


@dataclasses.dataclass
class ExportResult:
    """What `export_saved_model` wrote.

    Attributes:
        path: the version directory, `directory/<version>`.
        version: the version number.
        signatures: for each signature name, `{"inputs": {name: (dtype, shape)},
            "outputs": {name: (dtype, shape)}}` with `None` for free dimensions.
    """

    path: str
    version: int
    signatures: dict
    max_image_pixels: int = None


def export_saved_model(model, directory, version=None, overwrite=False, allow_untrained=False,
                       max_image_pixels=None):
    """Write the inference model as version `version` of a TF Serving model.

    Writes `directory/<version>/saved_model.pb` and `variables/`, the layout
    `tensorflow_model_server --model_base_path=directory` loads. The version
    directory appears complete or not at all: it is written beside its final
    place under a name TF Serving ignores and renamed when complete.

    The SavedModel holds the inference model only: no margin, no attacks, no
    objective, no optimizer. It has two signatures:

    ```
    serving_default   images       float32 (B, H, W, C) in [0, 1]
    serving_bytes     image_bytes  string  (B,)  PNG or JPEG files, decoded, converted
                                   to C channels (grayscale <-> RGB) and resized to
                                   H x W (bilinear, antialiased) inside the graph
    outputs of both   logits         float32 (B, K)  model(images, training=False), exactly
                                                     what model.predict returns
                      probabilities  float32 (B, K)  softmax at the head's training temperature
                      classes        int64   (B,)    argmax of logits
    ```

    For a `keras.layers.Dense` head `logits` are the logits and
    `probabilities = softmax(logits)`. For a `HypersphereDense` head `logits`
    are the cosines `cos` in [-1, 1] (unscaled, no margin), and
    `probabilities = softmax(s * cos)` with the head's scale `s`, the
    temperature it was trained at (the softmax of cosines would be close to
    uniform). `classes` is the same either way. `serving_default` refuses
    images outside [0, 1] (e.g. 0-255 pixels) with an `InvalidArgumentError`.
    `serving_bytes` exists for models with 1 or 3 input channels. TF
    Serving's REST API takes a string input whose name ends in `_bytes` as
    `{"b64": "<base64>"}`. It reads each image's width and height from its
    PNG or JPEG header and refuses, before decoding anything, an image of more
    than `max_image_pixels` pixels (a small file can declare a huge image: a
    389 KB PNG of 20000 x 20000 would take 2.75 GB to decode) and anything
    that is not a PNG or JPEG file, with an `InvalidArgumentError` naming the
    limit. The limit is kept in the SavedModel (`tf.saved_model.load(path)
    .max_image_pixels[0]`). An empty
    batch gives empty outputs on both signatures.

    A model counts as trained when its optimizer has applied at least one
    update (`model.optimizer.iterations > 0`); a model loaded from a `.keras`
    file keeps its optimizer's count. Models trained elsewhere, or saved
    without their optimizer, export with `allow_untrained=True`.

    Args:
        model: a built Keras model from images to logits (a `RobustModel`, or
            any model with one image input of known shape), or the path of a
            `.keras` file.
        directory: the model's base directory (created if missing).
        version: a positive integer; `None` picks one more than the highest
            existing version, or 1.
        overwrite: replace an existing version instead of refusing.
        allow_untrained: export a model whose optimizer never made a step.
        max_image_pixels: the largest image (width x height) `serving_bytes`
            decodes; None: `default_max_image_pixels` of the model's input
            (4096 x 4096, or 64 inputs if that is more).

    Returns:
        An `ExportResult` (path, version, signatures).

    Raises:
        FileNotFoundError: `model` is a path that does not exist.
        FileExistsError: the version exists and `overwrite` is False.
        ValueError: the model is not built or not trained.

    Example:

    >>> result = export_saved_model(model, "export/mnist")  # doctest: +SKIP
    >>> result.path                                          # doctest: +SKIP
    'export/mnist/1'
    """
    model = _load(model)
    check_exportable(model, allow_untrained)
    image_shape = input_image_shape(model)
    if max_image_pixels is None:
        max_image_pixels = default_max_image_pixels(image_shape)
    max_image_pixels = validation.check_number("max_image_pixels", max_image_pixels, minimum=1,
                                               integer=True)
    endpoints = {SERVING_DEFAULT: (images_function(model),
                                   tf.TensorSpec((None, *image_shape), tf.float32, name=IMAGES))}
    if image_shape[-1] in _DECODABLE_CHANNELS:
        endpoints[SERVING_BYTES] = (image_bytes_function(model, image_shape, max_image_pixels),
                                    tf.TensorSpec((None,), tf.string, name=IMAGE_BYTES))
    archive = keras.export.ExportArchive()
    # Kept in the SavedModel: `tf.saved_model.load(path).max_image_pixels[0]`.
    archive.add_variable_collection("max_image_pixels", [
        keras.Variable(max_image_pixels, dtype="int64", trainable=False,
                       name="max_image_pixels")])
    signatures = {}
    for name, (function, spec) in endpoints.items():
        traced = archive.add_endpoint(name, function, input_signature=[spec])
        signatures[name] = _describe(spec, traced.get_concrete_function().structured_outputs)
    path = versions.write_version(directory, version,
                                  lambda path: archive.write_out(path, verbose=False),
                                  overwrite=overwrite)
    return ExportResult(path=path, version=int(os.path.basename(path)), signatures=signatures,
                        max_image_pixels=max_image_pixels)


def serving_outputs(model, images):
    """The signatures' outputs on float32 images in [0, 1]: logits, probabilities, classes.

    An empty batch gives empty outputs without calling the model (oneDNN convolutions
    refuse a batch of 0)."""
    def outputs(images):
        if hasattr(model, "use_logits") and hasattr(model, "features"):
            features = model.features(images, training=False)
            # RobustModel.LOGIT_USES: cos and softmax(s * cos) for a hypersphere head.
            logits = model.use_logits(features, "evaluation")
            scores = model.use_logits(features, "serving_probabilities")
        else:
            logits = scores = model(images, training=False)
        return tf.cast(logits, tf.float32), tf.cast(scores, tf.float32)

    num_classes = outputs(tf.zeros((1, *images.shape[1:]), images.dtype))[0].shape[-1]
    empty = tf.zeros((0, num_classes), tf.float32)
    logits, scores = tf.cond(tf.shape(images)[0] > 0, lambda: outputs(images),
                             lambda: (empty, empty))
    return {
        "logits": logits,
        "probabilities": tf.nn.softmax(scores, axis=-1),
        "classes": tf.argmax(logits, axis=-1, output_type=tf.int64),
    }


def images_function(model):
    """The `serving_default` function: `images` (B, H, W, C) float32 in [0, 1] to outputs."""

    def serve(images):
        low, high = tf.reduce_min(images), tf.reduce_max(images)
        in_range = tf.logical_and(low >= -_RANGE_TOLERANCE, high <= 1.0 + _RANGE_TOLERANCE)
        check = tf.debugging.Assert(in_range, [
            "Expected images with pixel values in [0, 1] (divide 8-bit images by 255). "
            "Received: images with values in", low, high], name="check_images_range")
        with tf.control_dependencies([check]):
            images = tf.identity(images)
        return serving_outputs(model, images)

    return serve


def declared_size(encoded):
    """`(height, width)` a PNG or JPEG file declares in its header, read without decoding;
    `(-1, -1)` for anything else."""
    signature = tf.strings.substr(encoded, 0, 8)
    is_png = tf.logical_and(tf.equal(signature, _PNG_SIGNATURE),
                            tf.strings.length(encoded) >= 24)

    def png():
        # The IHDR chunk comes first: width and height, big-endian, at bytes 16 and 20.
        size = tf.io.decode_raw(tf.strings.substr(encoded, 16, 8), tf.int32, little_endian=False)
        return tf.cast(size[1], tf.int64), tf.cast(size[0], tf.int64)

    def jpeg():
        shape = tf.image.extract_jpeg_shape(encoded, output_type=tf.int64)
        return shape[0], shape[1]

    def other():
        return tf.constant(-1, tf.int64), tf.constant(-1, tf.int64)

    return tf.case([(is_png, png), (tf.io.is_jpeg(encoded), jpeg)], default=other)


def image_bytes_function(model, image_shape, max_image_pixels):
    """The `serving_bytes` function: `image_bytes` (B,) encoded images to outputs."""
    height, width, channels = image_shape

    def decode(encoded):
        h, w = declared_size(encoded)
        known = tf.Assert(h >= 0, [
            "Expected image_bytes to hold PNG or JPEG files. Received: a file that is neither"])
        # Negative sizes (a PNG header's 31st bit) are refused with the unknown formats.
        small = tf.Assert(tf.logical_and(w >= 0, h * w <= max_image_pixels), [
            f"Expected images of at most max_image_pixels={max_image_pixels} pixels (set at "
            "export). Received: an image of height x width", h, w])
        with tf.control_dependencies([known, small]):
            encoded = tf.identity(encoded)
        image = tf.io.decode_image(encoded, channels=channels, expand_animations=False,
                                   dtype=tf.float32)                        # (h, w, C) in [0, 1]
        image = tf.image.resize(image, (height, width), antialias=True)     # identity at H x W
        return tf.clip_by_value(tf.ensure_shape(image, image_shape), 0.0, 1.0)

    def serve(image_bytes):
        images = tf.map_fn(decode, image_bytes,
                           fn_output_signature=tf.TensorSpec(image_shape, tf.float32))
        return serving_outputs(model, images)

    return serve


def check_exportable(model, allow_untrained=False):
    """Refuse models that are not Keras models, not built, or (unless allowed) not trained."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Expected a Keras model. Received: model of type {type(model).__name__}"
        )
    if not model.built or not model.weights:
        raise ValueError(
            "Expected a built model (with its weights created). Received: an unbuilt "
            f"{type(model).__name__}; call it on a batch of images or train it first."
        )
    optimizer = getattr(model, "optimizer", None)
    steps = int(optimizer.iterations.numpy()) if optimizer is not None else 0
    if steps == 0 and not allow_untrained:
        reason = "no optimizer" if optimizer is None else "optimizer.iterations=0"
        raise ValueError(
            "Expected a trained model (its optimizer has made at least one step). Received: "
            f"a model with {reason}. Pass allow_untrained=True (--allow-untrained) to "
            "export weights trained elsewhere."
        )


def input_image_shape(model):
    """`(height, width, channels)` of the model's input, all known."""
    source = getattr(model, "backbone", model)
    try:
        shape = tuple(source.input_shape)
    except (AttributeError, ValueError):
        shape = None
    if shape is None or len(shape) != 4 or any(d is None for d in shape[1:]):
        raise ValueError(
            "Expected a model with one image input of known shape (batch, height, width, "
            f"channels). Received: input shape {shape}"
        )
    return tuple(int(d) for d in shape[1:])


def _load(model):
    if not isinstance(model, (str, os.PathLike)):
        return model
    path = os.fspath(model)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Expected an existing .keras file. Received: model={path!r}")
    return load_model(path)  # a clear error for a damaged file


def _describe(input_spec, outputs):
    """`{"inputs": {name: (dtype, shape)}, "outputs": {name: (dtype, shape)}}` of a signature."""
    return {"inputs": {input_spec.name: (input_spec.dtype.name, tuple(input_spec.shape))},
            "outputs": {name: (tensor.dtype.name, tuple(tensor.shape))
                        for name, tensor in outputs.items()}}
