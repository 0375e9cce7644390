"""PyTorch's SGD and the references' learning-rate schedules, against hand computation."""

import json
import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest

from tfrobust import optimizers, recipe
from tfrobust.cli.main import main


def _run(optimizer, gradients, w0):
    """Apply `gradients` (one per step) to a variable starting at `w0`; its values after each."""
    w = keras.Variable(np.array(w0, np.float32))
    values = []
    for g in gradients:
        optimizer.apply([keras.ops.convert_to_tensor(np.array(g, np.float32))], [w])
        values.append(w.numpy().copy())
    return values


def test_sgd_is_pytorchs_update_with_l2_weight_decay_through_the_momentum():
    lr, m, wd = 0.1, 0.9, 0.05
    w0, g1, g2 = np.array([1.0, -2.0]), np.array([0.5, 0.25]), np.array([-1.0, 2.0])
    got = _run(optimizers.SGD(lr, momentum=m, weight_decay=wd), [g1, g2], w0)
    # torch.optim.SGD: d = g + wd * w; buf = m * buf + d (buf = d at the first step); w -= lr * buf
    buf1 = g1 + wd * w0
    w1 = w0 - lr * buf1
    buf2 = m * buf1 + g2 + wd * w1
    w2 = w1 - lr * buf2
    np.testing.assert_allclose(got, [w1, w2], rtol=1e-6)


def test_a_changing_rate_scales_todays_step_not_the_buffer_as_keras_does():
    # Rate 1.0 then 0.1: PyTorch's second step is 0.1 * (m * g1 + g2); Keras' own SGD keeps
    # the first rate in its buffer: m * 1.0 * g1 + 0.1 * g2.
    rates = keras.optimizers.schedules.PiecewiseConstantDecay([0], [1.0, 0.1])
    g = np.array([1.0])
    ours = _run(optimizers.SGD(rates, momentum=0.9), [g, g], [0.0])
    theirs = _run(keras.optimizers.SGD(rates, momentum=0.9), [g, g], [0.0])
    np.testing.assert_allclose(ours, [[-1.0], [-1.0 - 0.1 * 1.9]], rtol=1e-6)
    np.testing.assert_allclose(theirs, [[-1.0], [-1.0 - 0.9 - 0.1]], rtol=1e-6)


def test_sgd_without_momentum_and_its_bad_arguments():
    np.testing.assert_allclose(_run(optimizers.SGD(0.5, momentum=0.0, weight_decay=0.1),
                                    [[2.0]], [1.0]), [[1.0 - 0.5 * (2.0 + 0.1)]], rtol=1e-5)
    with pytest.raises(ValueError, match=r"Expected 0 <= momentum < 1. Received: momentum=1.0"):
        optimizers.SGD(0.1, momentum=1.0)
    with pytest.raises(ValueError, match=r"Expected weight_decay >= 0. Received: weight_decay=-1"):
        optimizers.SGD(0.1, weight_decay=-1)
    with pytest.raises(ValueError, match="Expected nesterov=False"):
        optimizers.SGD(0.1, nesterov=True)


def test_cyclic_is_the_superconverge_triangle_read_after_each_batch():
    # Rice et al.'s robust_overfitting:
    # np.interp(epoch + (i + 1) / n, [0, epochs * 2 // 5, epochs], [0, lr_max, 0]).
    epochs, n, lr_max = 5, 10, 0.2
    cyclic = optimizers.schedule("cyclic", lr_max, epochs, n)
    assert (cyclic.peak_step, cyclic.total_steps) == (20, 50)
    for step in range(epochs * n):
        epoch, i = divmod(step, n)
        expected = np.interp(epoch + (i + 1) / n, [0, epochs * 2 // 5, epochs], [0, lr_max, 0])
        assert float(cyclic(step)) == pytest.approx(expected, abs=1e-7)
    # Fewer than three epochs: the peak at 2/5 of the updates.
    assert optimizers.schedule("cyclic", 0.1, 2, 10).peak_step == 8


def test_piecewise_divides_by_ten_at_half_and_three_quarters():
    piecewise = optimizers.schedule("piecewise", 0.1, 8, 25)  # 200 updates
    # FastAT's MultiStepLR(milestones=[T/2, 3T/4], gamma=0.1), stepped after each update.
    rates = [float(piecewise(step)) for step in (0, 99, 100, 149, 150, 199)]
    np.testing.assert_allclose(rates, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)
    assert optimizers.schedule("constant", 0.1) == 0.1
    with pytest.raises(ValueError, match=r"Expected lr_schedule in \['constant', 'piecewise', "
                                         r"'cyclic'\]. Received: lr_schedule='step'"):
        optimizers.schedule("step", 0.1, 8, 25)
    with pytest.raises(ValueError, match=r"Expected 2 or more updates for lr_schedule="
                                         r"'cyclic'. Received: epochs=1 of steps_per_epoch=1"):
        optimizers.schedule("cyclic", 0.1, 1, 1)


def test_a_scheduled_sgd_round_trips_through_a_keras_file(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=optimizers.SGD(optimizers.schedule("cyclic", 0.2, 5, 4),
                                           momentum=0.8, weight_decay=5e-4), loss="mse")
    model.fit(np.ones((8, 3)), np.zeros((8, 2)), batch_size=4, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    optimizer = loaded.optimizer
    assert isinstance(optimizer, optimizers.SGD)
    assert (optimizer.momentum, optimizer.l2, int(optimizer.iterations)) == (0.8, 5e-4, 2)
    assert isinstance(optimizer._learning_rate, optimizers.Triangular)
    assert optimizer._learning_rate.get_config() == {"maximum": 0.2, "peak_step": 8,
                                                     "total_steps": 20}
    for a, b in zip(model.optimizer.variables, optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # `import tfrobust` alone registers them: a fresh process loads the file.
    program = ("import keras, tfrobust\n"
               f"print(keras.saving.load_model({str(tmp_path / 'm.keras')!r}).optimizer"
               "._learning_rate.peak_step)")
    loaded = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert loaded.stdout.split()[-1] == "8"


def _options(**given):
    return recipe.resolve({**recipe.defaults(), **given})


def test_the_recipe_resolves_the_optimizer_options():
    adam = _options()
    assert (adam["optimizer"], adam["learning_rate"], adam["momentum"],
            adam["weight_decay"]) == ("adam", 1e-3, None, None)
    sgd = _options(optimizer="sgd")
    assert (sgd["learning_rate"], sgd["momentum"], sgd["weight_decay"]) == (0.1, 0.9, 0.0)
    with pytest.raises(ValueError, match=r"Expected --momentum and --weight-decay only with "
                                         r"--optimizer sgd. Received: optimizer='adam', "
                                         r"momentum=0.9"):
        _options(momentum=0.9)
    with pytest.raises(ValueError, match=r"Expected momentum < 1. Received: momentum=1.5"):
        _options(optimizer="sgd", momentum=1.5)
    with pytest.raises(ValueError, match=r"Expected optimizer to be one of \['adam', 'sgd'\]"):
        _options(optimizer="rmsprop")
    # A schedule counts updates: FreeAT makes `replays` of them per batch.
    free = _options(method="free-at", replays=4, optimizer="sgd", lr_schedule="cyclic",
                    epochs=5)
    optimizer = recipe.build_optimizer(free, steps_per_epoch=10, updates_per_batch=4)
    assert optimizer._learning_rate.total_steps == 200
    with pytest.raises(ValueError, match=r"Expected the number of batches per epoch for "
                                         r"lr_schedule='cyclic'. Received: steps_per_epoch=None"):
        recipe.build_optimizer(free)


@pytest.mark.slow
def test_train_takes_the_optimizer_options_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--optimizer", "sgd", "--learning-rate", "0.05", "--lr-schedule",
                 "piecewise", "--momentum", "0.8", "--weight-decay", "5e-4", "--epochs", "2",
                 "--limit", "256", "--batch-size", "64", "--num-steps", "1",
                 "--eval-num-steps", "2", "--val-limit", "64", "--eval-limit", "64",
                 "--output", str(out)]) == 0
    options = json.loads((out / "config.json").read_text())["options"]
    assert {k: options[k] for k in ("optimizer", "learning_rate", "lr_schedule", "momentum",
                                    "weight_decay")} == {
        "optimizer": "sgd", "learning_rate": 0.05, "lr_schedule": "piecewise",
        "momentum": 0.8, "weight_decay": 5e-4}
    optimizer = keras.saving.load_model(out / "model.keras").optimizer
    # 2 epochs of 4 batches: 8 updates, the rate divided by 10 from the 5th and by 100 from
    # the 7th.
    assert int(optimizer.iterations) == 8 and (optimizer.momentum, optimizer.l2) == (0.8, 5e-4)
    assert optimizer._learning_rate.get_config()["boundaries"] == [3, 5]
    assert float(optimizer.learning_rate) == pytest.approx(0.0005)
    capsys.readouterr()
    assert main(["train", "--momentum", "0.9", "--output", str(tmp_path / "r2")]) == 1
    assert ("Expected --momentum and --weight-decay only with --optimizer sgd"
            in capsys.readouterr().err)


@pytest.mark.slow
def test_a_schedule_over_tfrecord_data_counts_its_batches_without_a_warning(tmp_path, capsys):
    """TFRecord files do not say their size: the schedule's updates come from their label
    counts, and the progress bar and Keras see each pass's length (no "ran out of data")."""
    import tensorflow as tf

    from tfrobust import data

    x, y = data.load_arrays("cifar10-sample", "train", limit=40)
    for split, (images, labels) in {"train": (x, y), "test": (x[:20], y[:20])}.items():
        with tf.io.TFRecordWriter(str(tmp_path / f"{split}.tfrecord")) as writer:
            for image, label in zip(images, labels):
                png = tf.io.encode_png(tf.cast(image * 255, tf.uint8)).numpy()
                feature = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png])),
                           "label": tf.train.Feature(int64_list=tf.train.Int64List(
                               value=[int(label)]))}
                writer.write(tf.train.Example(features=tf.train.Features(
                    feature=feature)).SerializeToString())
    out = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["train", "--data", str(tmp_path), "--num-classes", "10",
                     "--model", "preact_resnet18", "--base-width", "4", "--epsilon", "8/255",
                     "--optimizer", "sgd", "--lr-schedule", "cyclic", "--epochs", "2",
                     "--batch-size", "16", "--num-steps", "1", "--eval-num-steps", "2",
                     "--val-limit", "12",
                     "--output", str(out)]) == 0
    assert not [w for w in caught if "ran out of data" in str(w.message)]
    model = keras.saving.load_model(out / "model.keras")
    optimizer = model.optimizer
    # --base-width from the command line: the stem has 4 filters, the features 8 x 4.
    assert json.loads((out / "config.json").read_text())["options"]["base_width"] == 4
    assert model.backbone.get_layer("stem_conv").kernel.shape == (3, 3, 3, 4)
    assert model.backbone.output_shape == (None, 32)
    # 40 images in batches of 16: 3 batches an epoch, 6 updates.
    assert int(optimizer.iterations) == 6
    assert optimizer._learning_rate.get_config()["total_steps"] == 6
