"""Datasets as batched `tf.data` pipelines of float32 images in [0, 1].

`load("mnist-sample")` works offline out of the box: a slice of MNIST ships
with tfrobust. Other data comes from tensorflow-datasets (`DATASETS`), from a
Keras-layout `.npz` file, or from TFRecord files with the tfds schema.

    import tfrobust
    train = tfrobust.data.load("mnist-sample", split="train", batch_size=128)
    x_test, y_test = tfrobust.data.load_arrays("mnist-sample", split="test")
    tfrobust.data.info("mnist-sample").num_classes  # 10
"""

from tfrobust.data.datasets import (
    DATASETS,
    DataUnavailableError,
    DatasetInfo,
    info,
    load,
    load_arrays,
)

__all__ = ["DATASETS", "DataUnavailableError", "DatasetInfo", "info", "load", "load_arrays"]
