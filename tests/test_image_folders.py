"""`--data DIR` for a folder of images, one subfolder per class, read by Keras."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tfrobust import data
from tfrobust.data import folders


def _write(root, x, y, start=0):
    for i, (image, label) in enumerate(zip(x, y), start):
        path = root / f"class_{label}" / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        keras.utils.save_img(str(path), np.round(image * 255).astype("uint8"), scale=False)


def _keys(x):
    return {image.tobytes() for image in np.round(x * 255).astype("uint8")}


@pytest.fixture(scope="module")
def digits():
    return data.load_arrays("mnist-sample", "test", limit=200)


def test_a_folder_of_class_folders_holds_out_a_seeded_tenth(tmp_path, digits):
    x, y = digits
    _write(tmp_path, x, y)
    meta = data.info(str(tmp_path))
    assert (meta.image_shape, meta.num_classes, meta.source) == ((28, 28, 1), 10, "folder")
    x_train, y_train = data.load_arrays(str(tmp_path), "train")
    x_test, y_test = data.load_arrays(str(tmp_path), "test")
    assert (len(x_train), len(x_test)) == (180, 20)  # FOLDER_TEST_FRACTION of 200
    # The two splits are the images written, disjoint, pixel for pixel and with their labels.
    assert _keys(x_train) | _keys(x_test) == _keys(x) and not _keys(x_train) & _keys(x_test)
    label_of = {image.tobytes(): label for image, label in
                zip(np.round(x * 255).astype("uint8"), y)}
    assert all(label_of[k.tobytes()] == label for k, label in
               zip(np.round(x_test * 255).astype("uint8"), y_test))
    again, labels_again = data.load_arrays(str(tmp_path), "test")
    np.testing.assert_array_equal(again, x_test)  # the same held-out images, in order
    np.testing.assert_array_equal(labels_again, y_test)
    assert x_test.dtype == np.float32 and x_test.min() >= 0 and x_test.max() <= 1


def test_train_and_test_folders_are_the_splits_and_images_are_resized(tmp_path, digits):
    x, y = digits
    _write(tmp_path / "train", x[:150], y[:150])
    _write(tmp_path / "test", x[150:], y[150:], start=150)
    x_test, y_test = data.load_arrays(str(tmp_path), "test")
    assert _keys(x_test) == _keys(x[150:]) and sorted(y_test) == sorted(y[150:])
    batches = list(data.load(str(tmp_path), "train", batch_size=64))
    assert sum(len(b[1]) for b in batches) == 150
    small, _ = data.load_arrays(str(tmp_path), "test", image_size=(14, 14))
    assert small.shape == (50, 14, 14, 1)
    assert data.info(str(tmp_path), image_size=(14, 14)).image_shape == (14, 14, 1)


def test_other_layouts_are_refused_naming_the_supported_ones(tmp_path, digits):
    x, y = digits
    loose = tmp_path / "loose"
    loose.mkdir()
    keras.utils.save_img(str(loose / "a.png"), np.round(x[0] * 255).astype("uint8"),
                         scale=False)
    with pytest.raises(FileNotFoundError, match="DIR/<class>/"):
        data.load_arrays(str(loose), "test")
    mismatched = tmp_path / "mismatched"
    _write(mismatched, x[:20], y[:20])
    _write(mismatched / "test", x[20:30], np.full(10, 99))
    with pytest.raises(ValueError, match="class folders"):
        data.info(str(mismatched))
    good = tmp_path / "good"
    _write(good, x[:20], y[:20])
    with pytest.raises(ValueError, match="split"):
        data.load_arrays(str(good), "validation")


def test_train_and_evaluate_an_image_folder_from_the_command_line(tmp_path, digits):
    x, y = digits
    folder = tmp_path / "digits"
    _write(folder, x, y)
    env = dict(os.environ, TF_NUM_INTRAOP_THREADS="1")
    run = tmp_path / "run"
    subprocess.run([sys.executable, "-m", "tfrobust", "train", "--data", str(folder),
                    "--image-size", "32x32", "--epochs", "1", "--num-steps", "1",
                    "--eval-num-steps", "2", "--val-limit", "20", "--output", str(run)],
                   check=True, capture_output=True, text=True, env=env, timeout=600)
    config = json.loads((run / "config.json").read_text())
    assert config["options"]["image_size"] == [32, 32]
    assert config["data_info"]["image_shape"] == [32, 32, 1]
    assert config["data_info"]["num_classes"] == 10
    model = keras.models.load_model(run / "model.keras")
    assert tuple(model.backbone.input_shape[1:]) == (32, 32, 1)
    # evaluate resizes the folder's 28x28 images to the model's 32x32 input.
    report = tmp_path / "report"
    subprocess.run([sys.executable, "-m", "tfrobust", "evaluate", str(run / "model.keras"),
                    "--data", str(folder), "--attacks", "fgsm", "--sweep-attacks", "fgsm",
                    "--epsilons", "0.1", "--checks", "outputs_are_logits", "--quiet",
                    "--report", str(report)],
                   check=True, capture_output=True, text=True, env=env, timeout=600)
    saved = json.loads((report / "report.json").read_text())
    assert saved["data"]["num_examples"] == 20  # the held-out tenth


def test_image_size_option_refuses_bad_values():
    from tfrobust.cli.arguments import image_size

    assert image_size("32x24") == [32, 24] and image_size("16") == [16, 16]
    for text in ("0x4", "axb", "1x2x3", ""):
        with pytest.raises(Exception, match="expected HxW"):
            image_size(text)


def test_supported_layouts_are_documented_in_the_error():
    assert "DIR/train/<class>" in folders.FOLDER_LAYOUTS
