"""`tfrobust.export` and `tfrobust export`: SavedModels that TF Serving's loader runs as predict."""

import base64
import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfrobust import attacks, data, export
from tfrobust.cli.main import main
from tfrobust.layers import HypersphereDense
from tfrobust.models import RobustModel, small_cnn

HEADS = ("dense", "hypersphere")
SCALE = 15.0


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def train(head):
    """small_cnn with a dense or HE head after 4 PGD-AT steps on the bundled MNIST sample."""
    keras.utils.set_random_seed(0)
    head = (HypersphereDense(10, scale=SCALE, margin=0.2, name="head") if head == "hypersphere"
            else keras.layers.Dense(10, name="head"))
    model = RobustModel(small_cnn(), head, attack=attacks.PGD(epsilon=0.3, num_steps=2),
                        eval_attack=False)
    model.compile(optimizer="adam")
    model.fit(data.load("mnist-sample", split="train", batch_size=64, limit=256), epochs=1,
              verbose=0)
    return model


@pytest.fixture(scope="module")
def models():
    return {head: train(head) for head in HEADS}


@pytest.fixture(scope="module")
def exported(models, tmp_path_factory):
    """Each head's model exported as version 1 of its own model directory."""
    root = tmp_path_factory.mktemp("export")
    return {head: export.export_saved_model(model, root / head) for head, model in models.items()}


@pytest.fixture(scope="module")
def digits():
    x, y = data.load_arrays("mnist-sample", split="test", limit=24)
    return x, y


def expected_probabilities(model, logits):
    """softmax at the head's training temperature: s * cos for HE, the logits for dense."""
    scale = model.head.scale if isinstance(model.head, HypersphereDense) else 1.0
    return softmax(scale * logits.astype("float64"))


def saved_model_cli(*args):
    """Run TensorFlow's `saved_model_cli` in a separate process; returns its stdout."""
    script = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    command = [script] if os.path.exists(script) else [
        sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    result = subprocess.run([*command, *args], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def png(image):
    """PNG file bytes of a float image in [0, 1] (exact for k/255 pixels)."""
    return tf.io.encode_png(tf.cast(tf.round(image * 255), tf.uint8)).numpy()


# -- the SavedModel as TensorFlow's own tools see it -----------------------------------------
def test_export_writes_the_tf_serving_layout(exported):
    result = exported["dense"]
    assert result.version == 1 and os.path.basename(result.path) == "1"
    assert os.path.isfile(os.path.join(result.path, "saved_model.pb"))
    assert os.path.isfile(os.path.join(result.path, "variables", "variables.index"))
    # Nothing else in the model directory: no leftover staging directory.
    assert os.listdir(os.path.dirname(result.path)) == ["1"]
    assert result.signatures == {
        "serving_default": {
            "inputs": {"images": ("float32", (None, 28, 28, 1))},
            "outputs": {"logits": ("float32", (None, 10)),
                        "probabilities": ("float32", (None, 10)), "classes": ("int64", (None,))}},
        "serving_bytes": {
            "inputs": {"image_bytes": ("string", (None,))},
            "outputs": {"logits": ("float32", (None, 10)),
                        "probabilities": ("float32", (None, 10)), "classes": ("int64", (None,))}},
    }


def signature_block(text, name):
    start = text.index(f"signature_def['{name}']:")
    end = text.find("signature_def[", start + 1)
    return text[start:end if end != -1 else len(text)]


def tensor_info(block, role, key):
    """(dtype, shape) printed by `saved_model_cli show` for one input or output."""
    match = re.search(rf"{role}\['{key}'\] tensor_info:\s+dtype: (\w+)\s+shape: \(([^)]*)\)",
                      block)
    assert match, block
    return match.group(1), match.group(2).replace(" ", "")


@pytest.mark.parametrize("head", HEADS)
def test_saved_model_cli_shows_the_named_signatures(exported, head):
    text = saved_model_cli("show", "--dir", exported[head].path, "--all")
    assert "MetaGraphDef with tag-set: 'serve'" in text
    default = signature_block(text, "serving_default")
    assert tensor_info(default, "inputs", "images") == ("DT_FLOAT", "-1,28,28,1")
    assert tensor_info(default, "outputs", "logits") == ("DT_FLOAT", "-1,10")
    assert tensor_info(default, "outputs", "probabilities") == ("DT_FLOAT", "-1,10")
    assert tensor_info(default, "outputs", "classes") == ("DT_INT64", "-1")
    assert "Method name is: tensorflow/serving/predict" in default
    encoded = signature_block(text, "serving_bytes")
    assert tensor_info(encoded, "inputs", "image_bytes") == ("DT_STRING", "-1")
    assert tensor_info(encoded, "outputs", "logits") == ("DT_FLOAT", "-1,10")


@pytest.mark.parametrize("head", HEADS)
def test_saved_model_cli_run_reproduces_predict(exported, models, digits, head, tmp_path):
    x = digits[0]
    np.save(tmp_path / "x.npy", x)
    saved_model_cli("run", "--dir", exported[head].path, "--tag_set", "serve",
                    "--signature_def", "serving_default",
                    "--inputs", f"images={tmp_path / 'x.npy'}", "--outdir", str(tmp_path / "out"))
    logits, probabilities, classes = (np.load(tmp_path / "out" / f"{name}.npy")
                                      for name in ("logits", "probabilities", "classes"))
    model = models[head]
    expected = model.predict(x, verbose=0)
    assert logits.shape == (24, 10) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    np.testing.assert_allclose(probabilities, expected_probabilities(model, expected), atol=1e-5)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
    assert classes.dtype == np.int64
    np.testing.assert_array_equal(classes, np.argmax(expected, -1))
    assert len(set(classes)) > 1 and np.ptp(logits, axis=0).min() > 1e-3  # not a constant
    if head == "hypersphere":  # the logits are the cosines: no scale, no margin
        assert np.all(np.abs(logits) <= 1.0 + 1e-6)


def test_saved_model_cli_runs_the_image_bytes_signature(exported, models, digits, tmp_path):
    x = digits[0][:6]
    rgb = np.repeat(x, 3, axis=-1)
    large = np.repeat(np.repeat(x[:2], 2, axis=1), 2, axis=2)                # (2, 56, 56, 1)
    jpeg = tf.io.encode_jpeg(tf.cast(tf.round(x[0] * 255), tf.uint8), quality=90).numpy()
    encoded = np.array([*(png(i) for i in x), png(rgb[0]), png(large[0]), png(large[1]), jpeg],
                       dtype=object)
    np.save(tmp_path / "bytes.npy", encoded, allow_pickle=True)
    saved_model_cli("run", "--dir", exported["dense"].path, "--tag_set", "serve",
                    "--signature_def", "serving_bytes",
                    "--inputs", f"image_bytes={tmp_path / 'bytes.npy'}",
                    "--outdir", str(tmp_path / "out"))
    logits = np.load(tmp_path / "out" / "logits.npy")
    classes = np.load(tmp_path / "out" / "classes.npy")
    model = models["dense"]
    # The same images as the graph decodes them: PNG exactly, a 3-channel PNG converted to
    # grayscale (exact for equal channels), 56 x 56 resized bilinearly with antialiasing,
    # JPEG through the same decoder.
    resized = tf.image.resize(large, (28, 28), antialias=True).numpy()
    decoded_jpeg = tf.io.decode_jpeg(jpeg, channels=1).numpy()[None].astype("float32") / 255
    reference = np.concatenate([x, x[:1], resized, decoded_jpeg])
    expected = model.predict(reference, verbose=0)
    assert logits.shape == (10, 10)
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    np.testing.assert_array_equal(classes, np.argmax(expected, -1))
    np.testing.assert_allclose(logits[:6], model.predict(x, verbose=0), atol=1e-5)


# -- what a TF Serving client sends ---------------------------------------------------------
def test_a_predict_request_built_from_the_signature_reproduces_predict(exported, models, digits):
    from tensorflow_serving.apis import predict_pb2  # the "serving" extra, part of "test"

    x = digits[0][:8]
    signature = tf.saved_model.load(exported["hypersphere"].path).signatures["serving_default"]
    _, inputs = signature.structured_input_signature
    (name, spec), = inputs.items()
    assert name == "images" and spec.dtype == tf.float32

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mnist"
    request.model_spec.signature_name = "serving_default"
    request.inputs[name].CopyFrom(tf.make_tensor_proto(x, dtype=spec.dtype))
    proto = request.inputs["images"]
    assert proto.dtype == tf.float32.as_datatype_enum
    assert [d.size for d in proto.tensor_shape.dim] == [8, 28, 28, 1]
    assert spec.is_compatible_with(tf.TensorSpec([d.size for d in proto.tensor_shape.dim],
                                                 tf.as_dtype(proto.dtype)))
    # The request as the server receives it: serialised, parsed, decoded.
    received = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    outputs = signature(**{k: tf.constant(tf.make_ndarray(v)) for k, v in received.inputs.items()})
    assert set(outputs) == set(signature.structured_outputs) == {"logits", "probabilities",
                                                                 "classes"}
    expected = models["hypersphere"].predict(x, verbose=0)
    np.testing.assert_allclose(outputs["logits"].numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(outputs["probabilities"].numpy(),
                               expected_probabilities(models["hypersphere"], expected), atol=1e-5)

    encoded = predict_pb2.PredictRequest()
    encoded.model_spec.name = "mnist"
    encoded.model_spec.signature_name = "serving_bytes"
    encoded.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([png(i) for i in x],
                                                                dtype=tf.string))
    assert encoded.inputs["image_bytes"].dtype == tf.string.as_datatype_enum
    by_bytes = tf.saved_model.load(exported["hypersphere"].path).signatures["serving_bytes"]
    outputs = by_bytes(image_bytes=tf.constant(tf.make_ndarray(encoded.inputs["image_bytes"])))
    np.testing.assert_allclose(outputs["logits"].numpy(), expected, atol=1e-5)


def test_the_documented_rest_bodies_reproduce_predict(exported, models, digits):
    x = digits[0][:4]
    signatures = tf.saved_model.load(exported["dense"].path).signatures
    expected = models["dense"].predict(x, verbose=0)
    # {"signature_name": ..., "instances": [...]}: one image per instance.
    body = json.loads(json.dumps({"signature_name": "serving_default",
                                  "instances": x.tolist()}))
    images = np.asarray(body["instances"], dtype=np.float32)
    out = signatures[body["signature_name"]](images=tf.constant(images))
    np.testing.assert_allclose(out["logits"].numpy(), expected, atol=1e-5)
    # A string input whose name ends in _bytes is sent as {"b64": ...}.
    body = json.loads(json.dumps({"signature_name": "serving_bytes", "instances": [
        {"image_bytes": {"b64": base64.b64encode(png(i)).decode("ascii")}} for i in x]}))
    encoded = [base64.b64decode(instance["image_bytes"]["b64"]) for instance in body["instances"]]
    out = signatures[body["signature_name"]](image_bytes=tf.constant(encoded))
    np.testing.assert_allclose(out["logits"].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(out["classes"].numpy(), np.argmax(expected, -1))


def test_serving_refuses_images_outside_the_unit_range(exported, digits):
    signature = tf.saved_model.load(exported["dense"].path).signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"pixel values in \[0, 1\]"):
        signature(images=tf.constant(digits[0][:2] * 255))


def test_a_plain_keras_classifier_exports_too(digits, tmp_path):
    x, y = digits
    keras.utils.set_random_seed(0)
    classifier = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                                   keras.layers.Dense(10)])
    classifier.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    classifier.fit(x, y, epochs=1, verbose=0)
    result = export.export_saved_model(classifier, tmp_path / "plain")
    out = tf.saved_model.load(result.path).signatures["serving_default"](images=tf.constant(x))
    expected = classifier.predict(x, verbose=0)
    np.testing.assert_allclose(out["logits"].numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(out["probabilities"].numpy(), softmax(expected), atol=1e-5)


# -- versions, atomicity, bad input ----------------------------------------------------------
def test_versions_count_up_and_existing_ones_are_refused_unless_overwritten(models, tmp_path,
                                                                            digits):
    x = digits[0][:4]
    base = tmp_path / "mnist"
    assert export.export_saved_model(models["dense"], base).version == 1
    assert export.export_saved_model(models["dense"], base).version == 2
    assert export.export_saved_model(models["dense"], base, version=7).version == 7
    assert export.existing_versions(base) == [1, 2, 7]
    with pytest.raises(FileExistsError, match=re.escape(str(base / "2"))):
        export.export_saved_model(models["hypersphere"], base, version=2)
    # Overwriting replaces the whole version: now it serves the HE model.
    export.export_saved_model(models["hypersphere"], base, version=2, overwrite=True)
    served = tf.saved_model.load(str(base / "2")).signatures["serving_default"]
    np.testing.assert_allclose(served(images=tf.constant(x))["logits"].numpy(),
                               models["hypersphere"].predict(x, verbose=0), atol=1e-5)
    assert sorted(os.listdir(base)) == ["1", "2", "7"]


def failing_save(*args, **kwargs):
    """Writes part of a SavedModel, then fails as a full disk would."""
    path = args[1] if len(args) > 1 else kwargs["export_dir"]
    with open(os.path.join(path, "saved_model.pb"), "wb") as handle:
        handle.write(b"partial")
    raise OSError(28, "No space left on device")


def test_a_failed_export_leaves_no_version_and_no_staging_directory(models, tmp_path,
                                                                    monkeypatch):
    base = tmp_path / "mnist"
    first = export.export_saved_model(models["dense"], base)
    before = open(os.path.join(first.path, "saved_model.pb"), "rb").read()
    monkeypatch.setattr(tf.saved_model, "save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        export.export_saved_model(models["dense"], base)
    assert os.listdir(base) == ["1"]
    # A failed overwrite keeps the old version as it was.
    with pytest.raises(OSError, match="No space left"):
        export.export_saved_model(models["dense"], base, version=1, overwrite=True)
    assert os.listdir(base) == ["1"]
    assert open(os.path.join(first.path, "saved_model.pb"), "rb").read() == before


def test_untrained_unbuilt_and_missing_models_are_refused(models, tmp_path):
    base = tmp_path / "mnist"
    untrained = RobustModel(small_cnn(), keras.layers.Dense(10), attack=attacks.PGD(0.3))
    untrained.compile(optimizer="adam")
    with pytest.raises(ValueError, match=r"trained model.*optimizer\.iterations=0"):
        export.export_saved_model(untrained, base)
    with pytest.raises(ValueError, match="no optimizer"):
        export.export_saved_model(RobustModel(small_cnn(), keras.layers.Dense(10),
                                              attack=attacks.PGD(0.3)), base)
    unbuilt = RobustModel(keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(8)]),
                          keras.layers.Dense(10), attack=attacks.PGD(0.3))
    with pytest.raises(ValueError, match="Expected a built model"):
        export.export_saved_model(unbuilt, base)
    missing = tmp_path / "missing.keras"
    with pytest.raises(FileNotFoundError, match=re.escape(repr(str(missing)))):
        export.export_saved_model(str(missing), base)
    with pytest.raises(TypeError, match="Expected a Keras model"):
        export.export_saved_model(object(), base)
    assert not base.exists()
    (tmp_path / "a-file").write_text("")
    with pytest.raises(FileExistsError, match="is a file"):
        export.export_saved_model(models["dense"], tmp_path / "a-file")
    with pytest.raises(ValueError, match="version=0"):
        export.export_saved_model(models["dense"], base, version=0)
    # Weights trained elsewhere export when asked: the API, and the command line.
    assert export.export_saved_model(untrained, base, allow_untrained=True).version == 1
    untrained.save(tmp_path / "untrained.keras")
    assert main(["export", str(tmp_path / "untrained.keras"), str(base)]) == 1
    assert export.existing_versions(base) == [1]
    assert main(["export", str(tmp_path / "untrained.keras"), str(base),
                 "--allow-untrained"]) == 0
    assert export.existing_versions(base) == [1, 2]


# -- the command line --------------------------------------------------------------------------
def test_tfrobust_export_writes_versions_of_a_keras_file(models, digits, tmp_path, capsys):
    path = str(tmp_path / "model.keras")
    models["hypersphere"].save(path)
    out = tmp_path / "serving" / "mnist"
    assert main(["export", path, str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"as version 1 to {out / '1'}" in printed
    assert re.search(r"input\s+images\s+float32\s+\(-1, 28, 28, 1\)", printed)
    assert re.search(r"input\s+image_bytes\s+string\s+\(-1\)", printed)
    assert re.search(r"output\s+classes\s+int64\s+\(-1\)", printed)
    assert main(["export", path, str(out), "--version", "5"]) == 0
    assert export.existing_versions(out) == [1, 5]
    assert main(["export", path, str(out), "--version", "5"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", path, str(out), "--version", "5", "--overwrite"]) == 0
    x = digits[0][:4]
    served = tf.saved_model.load(str(out / "5")).signatures["serving_default"]
    np.testing.assert_allclose(served(images=tf.constant(x))["logits"].numpy(),
                               models["hypersphere"].predict(x, verbose=0), atol=1e-5)
    assert main(["export", str(tmp_path / "nope.keras"), str(out)]) == 1
    assert "nope.keras" in capsys.readouterr().err
    assert export.existing_versions(out) == [1, 5]
