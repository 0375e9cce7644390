"""What `tfrobust.evaluate` is given, resolved: model, data, threat model and attacks."""

import os

import keras
import numpy as np
import tensorflow as tf

from tfrobust import attacks as attacks_lib
from tfrobust.evaluation.store import digest, file_digest
from tfrobust.utils import validation

BASE_STEPS = 20  # the PGD of the sweep ("pgd") and of the checks
SWEEP_MULTIPLES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)


def resolve_model(model):
    """The model to attack and its identity (name, class, parameters, a hash of its weights).

    Args:
        model: a Keras model, a callable from images to logits, a `.keras` path, or
            `"pretrained:NAME"`, a model of the zoo (`tfrobust.models.pretrained`).

    Returns:
        `(model, identity)`; `identity["weights_sha256"]` is None for a plain callable.
    """
    identity = {}
    if isinstance(model, (str, os.PathLike)):
        from tfrobust.models.zoo import resolve_path

        path = os.fspath(resolve_path(model)[0])
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Expected a saved model file. Received: model={path!r}")
        identity.update(file=os.path.abspath(path), file_sha256=file_digest(path))
        from tfrobust.models import load_model

        model = load_model(path)
    if isinstance(model, keras.Model):
        weights = [np.asarray(w) for w in model.weights]
        identity.update(
            name=model.name, **{"class": type(model).__name__},
            parameters=int(sum(w.size for w in weights)),
            weights_sha256=digest(type(model).__name__, *weights) if weights else None,
        )
        if not model.built or not weights:
            raise ValueError(f"Expected a built model with weights. Received: model "
                             f"{model.name!r} has none; call it on a batch or train it first.")
    elif callable(model):
        identity.update(name=getattr(model, "__name__", type(model).__name__),
                        **{"class": type(model).__name__}, parameters=0, weights_sha256=None)
    else:
        raise TypeError("Expected model to be a Keras model, a callable returning logits or a "
                        f".keras path. Received: model of type {type(model).__name__}")
    return model, identity


def threat_model(model, norm, epsilon):
    """`(norm, epsilon)`, taking what is None from a `RobustModel`'s evaluation attack."""
    from tfrobust.models import RobustModel

    reference = None
    if isinstance(model, RobustModel):
        reference = model.eval_attack or model.attack
    if epsilon is None:
        if reference is None:
            raise ValueError("Expected epsilon (the threat model's radius); the model carries "
                             "no evaluation attack to take it from. Received: epsilon=None")
        if norm is not None and norm != reference.norm:
            # An L-inf radius is no L2 radius (0.3 means very different threats).
            raise ValueError(
                f"Expected epsilon with norm={norm!r}: the model's evaluation attack is "
                f"{reference.norm} {reference.epsilon:g}, whose radius does not carry over to "
                f"another norm. Received: norm={norm!r}, epsilon=None")
        epsilon = reference.epsilon
        norm = reference.norm
    norm = validation.check_choice("norm", "linf" if norm is None else norm, ("linf", "l2"))
    epsilon = validation.check_number("epsilon", epsilon, minimum=0.0)
    return norm, float(epsilon)


def check_shard(shard, cache_dir):
    """`(k, n)` from `"k/n"` or a pair, 1 <= k <= n; None stays None."""
    if shard is None:
        return None
    try:
        k, n = (int(part) for part in (shard.split("/") if isinstance(shard, str) else shard))
    except (TypeError, ValueError):
        k = n = None
    if k is None or not 1 <= k <= n:
        raise ValueError(f"Expected shard as 'k/n' with 1 <= k <= n. Received: shard={shard!r}")
    if cache_dir is None:
        raise ValueError("Expected cache_dir with shard: a shard's work goes to the cache. "
                         f"Received: shard={shard!r}, cache_dir=None")
    return k, n


def evaluation_logits(model, strategy=None):
    """The logits attacks see: a `RobustModel`'s evaluation logits (`LOGIT_USES`),
    each batch split over the local devices of `strategy` (None: the strategy in
    scope) when it has more than one (`utils.distribution.split_over_devices`)."""
    from tfrobust.utils import distribution

    logits_fn = attacks_lib.as_logits_fn(model)
    return distribution.split_over_devices(logits_fn, distribution.local_devices(strategy))


def model_image_shape(model):
    """`(height, width, channels)` of the model's input images, or None if it does not say."""
    try:  # a RobustModel's input is its backbone's
        shape = tuple(getattr(model, "backbone", model).input_shape[1:])
    except (AttributeError, ValueError, TypeError):
        return None
    if len(shape) != 3 or not all(shape):
        return None
    return tuple(int(d) for d in shape)


def model_image_size(model):
    """`(height, width)` of the model's input images, or None if it does not say."""
    shape = model_image_shape(model)
    return None if shape is None else shape[:2]


def check_fits_model(x, model, data_name):
    """Refuse images the model cannot take, naming both shapes (before any attack)."""
    expected = model_image_shape(model)
    received = tuple(int(d) for d in np.shape(x)[1:])
    if expected is None or received == expected:
        return
    hint = ""
    if received[:2] == expected[:2] and {received[2], expected[2]} == {1, 3}:
        hint = (" The channels differ: a grayscale model on colour images or the other way "
                "round (e.g. an MNIST model on CIFAR-10).")
    raise ValueError(f"Expected images of the model's input shape {expected}. Received: "
                     f"data={data_name!r} with images of shape {received}.{hint}")


def resolve_data(data, split, limit, clip_min, clip_max, image_size=None):
    """`(x, y, identity)` from arrays, a `tf.data.Dataset` or a dataset name.

    Args:
        data: `(x, y)` arrays, a dataset of `(images, labels)` (batched or
            not), or a name/file for `tfrobust.data`.
        split: the split of a named dataset.
        limit: at most this many examples, or None.
        clip_min, clip_max: the range the images must lie in.
        image_size: `(height, width)` an image folder's images are resized to (the
            model's input).
    """
    if limit is not None:
        limit = validation.check_number("limit", limit, minimum=1, integer=True)
    identity = {"name": None, "split": None, "limit": limit}
    if isinstance(data, (str, os.PathLike)):
        from tfrobust import data as data_lib

        x, y = data_lib.load_arrays(os.fspath(data), split, limit=limit, image_size=image_size)
        identity.update(name=os.fspath(data), split=split)
    elif isinstance(data, tf.data.Dataset):
        x, y = _dataset_arrays(data, limit)
        identity.update(name="tf.data.Dataset")
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = np.asarray(data[0]), np.asarray(data[1])
        x, y = x[:limit], y[:limit]
        identity.update(name="arrays")
    else:
        raise TypeError("Expected data to be (x, y) arrays, a tf.data.Dataset or a dataset "
                        f"name. Received: data of type {type(data).__name__}")
    if np.issubdtype(np.asarray(x).dtype, np.integer):
        raise ValueError(f"Expected floating-point images in [{clip_min:g}, {clip_max:g}]. "
                         f"Received: images of dtype {np.asarray(x).dtype}; convert 8-bit "
                         "images with x.astype('float32') / 255.")
    x = validation.check_images(x, "x", clip_min=clip_min, clip_max=clip_max)
    y = validation.check_labels(y, name="y", num_examples=len(x))
    if len(x) == 0:
        raise ValueError("Expected at least one example. Received: 0 examples")
    identity.update(image_shape=list(x.shape[1:]), sha256=digest(x, y))
    return x, y, identity


def _dataset_arrays(dataset, limit):
    xs, ys, count = [], [], 0
    for batch in dataset:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError("Expected a dataset of (images, labels). Received: elements "
                             f"of type {type(batch).__name__}")
        images, labels = np.asarray(batch[0]), np.asarray(batch[1])
        if images.ndim == 3:  # unbatched elements
            images, labels = images[None], np.reshape(labels, (1,))
        xs.append(images)
        ys.append(np.reshape(labels, (len(images), -1))[:, 0] if labels.ndim > 1 else labels)
        count += len(images)
        if limit is not None and count >= limit:
            break
    if not xs:
        raise ValueError("Expected a non-empty dataset. Received: a dataset with no elements")
    return np.concatenate(xs)[:limit], np.concatenate(ys)[:limit]


def check_names(checks, known):
    """The set of enabled check names: True (all of `known`), False/None (none) or a list."""
    if checks is True:
        return set(known)
    if checks is False or checks is None:
        return set()
    names = set(as_list(checks, "checks"))
    unknown = sorted(names - set(known))
    if unknown:
        raise ValueError(f"Expected checks among {list(known)}. Received: checks={checks!r}")
    return names


def as_list(value, name):
    """A list from a comma-separated string, a list/tuple, None (empty) or one item."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    if value is None:
        return []
    return [value]


def named_attack(identifier, common):
    """An attack from a name at the evaluation's threat model; instances as they are.

    Args:
        identifier: a registered name (`"pgd"` is PGD-20), a config or an `Attack`.
        common: the threat model: `epsilon`, `norm`, `seed`, `clip_min`, `clip_max`.
    """
    if isinstance(identifier, str) and identifier.lower() == "pgd":
        return attacks_lib.PGD(num_steps=BASE_STEPS, **common)
    if isinstance(identifier, str):
        if identifier.lower() not in attacks_lib.names():
            raise ValueError(f"Expected attack names among {attacks_lib.names()} or "
                             f"'standard'. Received: attack={identifier!r}")
        return attacks_lib.get(identifier, **common)
    attack = attacks_lib.get(identifier)
    if attack.norm != common["norm"] or attack.epsilon > common["epsilon"] + 1e-12 or (
            attack.clip_min, attack.clip_max) != (common["clip_min"], common["clip_max"]):
        raise ValueError(
            f"Expected attacks within the evaluation's threat model ({common['norm']}, epsilon "
            f"{common['epsilon']:g}, range [{common['clip_min']:g}, {common['clip_max']:g}]). "
            f"Received: {attack!r}")
    return attack


def ensemble_members(attacks, common):
    """The ensemble's attacks, in order: `"standard"` and `AutoAttack`s are unpacked."""
    members = []
    for item in as_list(attacks, "attacks"):
        if isinstance(item, str) and item.lower() in ("standard", "autoattack"):
            members.extend(attacks_lib.standard_attacks(**common))
            continue
        attack = named_attack(item, common)
        if isinstance(attack, attacks_lib.AutoAttack):
            members.extend(attack.attacks)
        else:
            members.append(attack)
    if not members:
        raise ValueError(f"Expected at least one attack. Received: attacks={attacks!r}")
    return members


def sweep_grid(epsilons, epsilon, norm, clip_min, clip_max, image_shape):
    """The sweep's budgets, from 0 to a budget that reaches the mid-range image from anywhere."""
    half_range = (clip_max - clip_min) / 2
    large = half_range if norm == "linf" else half_range * float(np.sqrt(np.prod(image_shape)))
    if epsilons is None:
        values = [m * epsilon for m in SWEEP_MULTIPLES]
    else:
        values = [validation.check_number("epsilons", e, minimum=0.0)
                  for e in as_list(epsilons, "epsilons")]
    values = {float(v) for v in values if v < large} | {0.0, float(min(epsilon, large)), large}
    return sorted(values)


def at_epsilon(attack, epsilon):
    """A copy of `attack` at another budget, its step size scaled with it."""
    config = attack.get_config()
    ratio = epsilon / attack.epsilon if attack.epsilon > 0 else 0.0
    config["epsilon"] = epsilon
    if config.get("step_size") is not None:
        config["step_size"] = config["step_size"] * ratio
    return type(attack).from_config(config)


def label(attack):
    """A short display name: `pgd-20`, `pgd-20x5`, `apgd-dlr`, `fgsm`, `square-5000`...

    The attack's registered name, its `cost` if it declares `cost_in_name`,
    and its restarts when there are several.
    """
    name = attack.registry_name or type(attack).__name__
    if attack.cost_in_name:
        name = f"{name}-{attack.cost}"
    restarts = getattr(attack, "num_restarts", 1)
    return f"{name}x{restarts}" if restarts > 1 else name
