"""Distribution strategies by name, and who does what in a multi-worker cluster.

`tfrobust train --distribute none|mirrored|multi-worker` goes through `strategy`;
`cluster_task` reads the `TF_CONFIG` that `tf.distribute.MultiWorkerMirroredStrategy`
reads, so that only one worker (the chief) writes the run's artefacts.
"""

import dataclasses
import json
import os

STRATEGIES = ("none", "mirrored", "multi-worker")


@dataclasses.dataclass(frozen=True)
class ClusterTask:
    """This process's place in a cluster.

    Attributes:
        type: `"chief"` or `"worker"` (`"worker"` outside a cluster).
        index: the task index within its type.
        num_workers: processes that train (chief and workers; 1 outside a cluster).
        is_chief: whether this process writes the artefacts: the `chief` task,
            or worker 0 when the cluster has no chief.
    """

    type: str
    index: int
    num_workers: int
    is_chief: bool


def cluster_task(environ=None):
    """This process's `ClusterTask`, from the `TF_CONFIG` environment variable.

    Without `TF_CONFIG` the process is alone: worker 0 of 1, the chief.

    Raises:
        ValueError: `TF_CONFIG` is not JSON of the form
            `{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}`.
    """
    text = (os.environ if environ is None else environ).get("TF_CONFIG")
    if not text:
        return ClusterTask("worker", 0, 1, True)
    example = ('{"cluster": {"worker": ["host1:port", "host2:port"]}, '
               '"task": {"type": "worker", "index": 0}}')
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        kind, index = task["type"], int(task["index"])
        chiefs, workers = list(cluster.get("chief", [])), list(cluster.get("worker", []))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ValueError(f"Expected TF_CONFIG like {example}. "
                         f"Received: TF_CONFIG={text!r}") from None
    members = {"chief": chiefs, "worker": workers}
    if kind not in members or not 0 <= index < len(members[kind]):
        raise ValueError(
            f"Expected TF_CONFIG's task to name a chief or worker of its cluster. Received: "
            f"task={task!r} with cluster={cluster!r}")
    is_chief = kind == "chief" or (not chiefs and index == 0)
    return ClusterTask(kind, index, len(chiefs) + len(workers), is_chief)


def strategy(name):
    """The `tf.distribute.Strategy` named `name`: `"none"`, `"mirrored"` or `"multi-worker"`.

    `"none"` is TensorFlow's default (one device), `"mirrored"` a
    `MirroredStrategy` over this machine's GPUs (or its CPU), `"multi-worker"`
    a `MultiWorkerMirroredStrategy` configured by `TF_CONFIG`, with ring
    collectives on CPU-only machines (NCCL needs GPUs). Create it before any
    other TensorFlow work in the process: it starts the process's gRPC server.
    """
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(f"Expected distribute in {list(STRATEGIES)}. "
                         f"Received: distribute={name!r}")
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    cluster_task()  # a malformed TF_CONFIG gets a clear error, not a TensorFlow one
    if not os.environ.get("TF_CONFIG"):
        raise ValueError(
            "Expected the TF_CONFIG environment variable for distribute='multi-worker' (the "
            "cluster's workers and this process's task). Received: no TF_CONFIG.")
    implementation = (tf.distribute.experimental.CommunicationImplementation.AUTO
                      if tf.config.list_physical_devices("GPU")
                      else tf.distribute.experimental.CommunicationImplementation.RING)
    return tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(
            implementation=implementation))


def shard_by_data(dataset):
    """`dataset` with the DATA auto-shard policy: each worker keeps its share of every batch.

    Every worker builds the same pipeline (same seed, same global batches) and
    keeps its part of each global batch, so the workers together train on
    exactly the batches one process would. The FILE policy would read less
    but needs at least one input file per worker, and in-memory data has no files.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def local_devices(strategy):
    """The devices of `strategy` in this process (None: the strategy in scope, if any;
    `[]` outside any)."""
    import tensorflow as tf

    if strategy is None:
        if not tf.distribute.has_strategy():
            return []
        strategy = tf.distribute.get_strategy()
    try:
        return list(strategy.extended.worker_devices)
    except RuntimeError:  # strategies without devices of their own
        return []


def split_over_devices(fn, devices):
    """`fn` on a batch, computed as one slice of the batch per device, concatenated.

    For a model's forward pass inside an attack: the attack's own arithmetic
    and random draws stay on the whole batch, so its results are those of one
    device (up to the order of floating-point sums), while the passes, which
    are its cost, run on every device at once. Gradients flow through.
    `fn` must be per-example (inference-mode batch normalisation is).
    """
    import tensorflow as tf

    if len(devices) < 2:
        return fn

    def split(images):
        size = tf.shape(images)[0]
        parts = []
        for k, device in enumerate(devices):
            start = size * k // len(devices)
            stop = size * (k + 1) // len(devices)
            with tf.device(device):
                parts.append(fn(images[start:stop]))
        return tf.concat(parts, axis=0)

    return split
