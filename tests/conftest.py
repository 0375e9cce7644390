"""Shared fixtures: tiny closed-form models and the bundled MNIST sample."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


# Test files by their duration on two workers, longest first (`pytest --durations=60`,
# 2026-12-04, AMD EPYC, nothing else running: the ADR short runs alone took 472 s). With
# `--no-loadscope-reorder` (setup.cfg) pytest-xdist hands whole files to the workers in this
# order, so the longest file starts at once instead of last, alone on one worker, while the
# other worker works through the rest. Files not named keep their order after these.
LONGEST_FIRST = ("test_reference_fidelity.py", "test_objectives.py", "test_resume.py",
                 "test_distributed.py", "test_cli.py", "test_tuning.py",
                 "test_attack_registry.py", "test_evaluation.py", "test_optimizers.py",
                 "test_evaluate_cli.py", "test_experiments.py", "test_zoo.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable within a file


def linear_classifier(weights, bias=None, input_shape=(2, 2, 1)):
    """`Flatten -> Dense` with the given (D, K) weights: logits = x_flat @ W + b."""
    weights = np.asarray(weights, "float32")
    bias = np.zeros(weights.shape[1], "float32") if bias is None else np.asarray(bias, "float32")
    inputs = keras.Input(input_shape)
    flat = keras.layers.Flatten()(inputs)
    dense = keras.layers.Dense(weights.shape[1], name="linear")
    model = keras.Model(inputs, dense(flat))
    dense.set_weights([weights, bias])
    return model


def two_class_model(seed=0, input_shape=(2, 2, 1)):
    """A random 2-class linear classifier (layer "linear") on small images."""
    rng = np.random.default_rng(seed)
    dims = int(np.prod(input_shape))
    return linear_classifier(rng.normal(size=(dims, 2)), rng.normal(size=2), input_shape)


def predicted(model, x):
    """Labels the model gets right, so `Attack.__call__` never falls back to the clean input."""
    return np.argmax(model(x).numpy(), -1).astype("int32")


def ascent_direction(model, y):
    """For 2 classes the CE gradient w.r.t. x is p_other * (w_other - w_y): (B, D)."""
    w = model.get_layer("linear").get_weights()[0]
    return np.where(y[:, None] == 0, w[:, 1] - w[:, 0], w[:, 0] - w[:, 1])


def two_conv_net():
    """conv16-pool-conv32-pool-fc100, returning features: 0.73M multiply-adds a digit against
    small_cnn's 9.95M, for tests that train on real digits and need a network that learns,
    not small_cnn itself."""
    return keras.Sequential([keras.Input((28, 28, 1)),
                             keras.layers.Conv2D(16, 3, activation="relu"),
                             keras.layers.MaxPooling2D(),
                             keras.layers.Conv2D(32, 3, activation="relu"),
                             keras.layers.MaxPooling2D(), keras.layers.Flatten(),
                             keras.layers.Dense(100, activation="relu")])


@pytest.fixture(scope="session")
def mnist_sample():
    """The bundled MNIST sample as float32 arrays: (x_train, y_train, x_test, y_test)."""
    from tfrobust import data

    x_train, y_train = data.load_arrays("mnist-sample", split="train")
    x_test, y_test = data.load_arrays("mnist-sample", split="test")
    return x_train, y_train, x_test, y_test


@pytest.fixture(scope="session")
def standard_mlp(mnist_sample):
    """A 64-unit MLP after 2 epochs of standard training on the first 2000 sample digits
    (batch 32, Adam): a model that attacks break. Shared; tests only read it."""
    x_train, y_train = mnist_sample[0][:2000], mnist_sample[1][:2000]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)])
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, epochs=2, batch_size=32, verbose=0)
    return model


def _train_two_conv_nets(mnist_sample):
    """The models and Keras histories of `trained_two_conv_net`, trained here."""
    from tfrobust import attacks
    from tfrobust.models import RobustModel

    x, y = mnist_sample[0][:3000], mnist_sample[1][:3000]
    trained, histories = {}, {}
    for objective in ("standard", "pgd-at"):
        keras.utils.set_random_seed(0)
        model = RobustModel(two_conv_net(), keras.layers.Dense(10), objective=objective,
                            attack=attacks.PGD(epsilon=0.2, num_steps=5), eval_attack=False)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        histories[objective] = model.fit(x, y, batch_size=64, verbose=0,
                                         epochs=3 if objective == "standard" else 2).history
        trained[objective] = model
    return trained, histories


@pytest.fixture(scope="session")
def trained_two_conv_net(mnist_sample, tmp_path_factory):
    """`two_conv_net` after three epochs of standard training, and after two of PGD-AT at
    L-inf 0.2 (PGD-5), with their training histories (`["history"]`).

    On the first 3,000 sample digits, batch 64, Adam 1e-3: the settings of test_objectives'
    standard and PGD-AT rows, whose every-framework test takes them from here. Shared by the
    attack, evaluation and framework tests; they only read these models. Under pytest-xdist
    the first worker to need them trains them and saves them beside the workers' temporary
    folders; the other loads those files (the same weights) instead of training again.
    """
    if not os.environ.get("PYTEST_XDIST_WORKER"):  # one process: nothing to share
        trained, histories = _train_two_conv_nets(mnist_sample)
        return dict(trained, history=histories)
    import fcntl
    import json

    folder = tmp_path_factory.getbasetemp().parent / "trained_two_conv_net"
    folder.mkdir(exist_ok=True)
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)           # the other worker waits while one trains
        if (folder / "history.json").exists():
            import tfrobust.models  # noqa: F401  (registers RobustModel for loading)

            trained = {name: keras.saving.load_model(folder / f"{name}.keras", compile=False)
                       for name in ("standard", "pgd-at")}
            histories = json.loads((folder / "history.json").read_text())
        else:
            trained, histories = _train_two_conv_nets(mnist_sample)
            for name, model in trained.items():
                model.save(folder / f"{name}.keras")
            (folder / "history.json").write_text(json.dumps(histories))  # written last
    return dict(trained, history=histories)
