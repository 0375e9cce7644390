"""tfrobust: adversarially robust image classifiers in Keras 3 on TensorFlow 2.

    import tfrobust
    train = tfrobust.data.load("mnist-sample", split="train", batch_size=128)
    test = tfrobust.data.load("mnist-sample", split="test", batch_size=256)
    model = tfrobust.models.RobustModel(
        backbone=tfrobust.models.small_cnn(input_shape=(28, 28, 1)),
        head=keras.layers.Dense(10),
        attack=tfrobust.attacks.PGD(epsilon=0.3, step_size=0.01, num_steps=40),
    )
    model.compile(optimizer="adam")
    model.fit(train, validation_data=test, epochs=2)
"""

from tfrobust._backend import check_backend as _check_backend

_check_backend()

from tfrobust.version import __version__  # noqa: E402
from tfrobust import (attacks, callbacks, data, export, layers, models,  # noqa: E402,F401
                      objectives, tuning)
from tfrobust import evaluation  # noqa: E402
from tfrobust.evaluation import evaluate  # noqa: E402

__all__ = ["__version__", "attacks", "callbacks", "data", "evaluate", "evaluation", "export",
           "layers", "models", "objectives", "tuning"]
