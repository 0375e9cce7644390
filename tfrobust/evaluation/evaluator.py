"""`tfrobust.evaluate`: robust accuracy with the checks that catch a weak evaluation."""

import os
import time

import keras
import numpy as np
import tensorflow as tf

from tfrobust import attacks as attacks_lib
from tfrobust.evaluation import checks as checks_lib
from tfrobust.evaluation.report import EvaluationReport
from tfrobust.evaluation.store import UnitStore, digest, file_digest
from tfrobust.utils import validation

CHECKS = ("epsilon_zero", "monotone_in_epsilon", "large_epsilon", "more_steps", "more_restarts",
          "single_step", "black_box", "logit_scale", "zero_gradient", "outputs_are_logits",
          "deterministic", "valid_examples")
_SWEEP_MULTIPLES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
_BASE_STEPS = 20          # the PGD of the sweep and of the checks
_MORE = 5                 # more_steps: 5x the steps; more_restarts: 5 restarts
_CHECK_SQUARE_QUERIES = 1000


def evaluate(model, data, *, norm=None, epsilon=None, attacks="standard",
             sweep_attacks=("pgd", "apgd-dlr"), epsilons=None, checks=True, split="test",
             limit=None, batch_size=256, clip_min=0.0, clip_max=1.0, seed=0, tolerance=0.02,
             cache_dir=None, verbose=True):
    """Evaluate a model's robustness, with the checks that catch gradient masking.

    Runs, on the same examples:

    1. the clean accuracy;
    2. the ensemble `attacks` (AutoAttack's by default), each only on the
       points still robust, giving the per-example worst case and which
       attack broke each point;
    3. an epsilon sweep of `sweep_attacks` (robust accuracy against epsilon),
       including epsilon 0 and a large epsilon from which every input can
       reach the mid-range image;
    4. the checks (see `tfrobust.evaluation.checks`): accuracy non-increasing
       in epsilon and equal to the clean accuracy at 0; near 0 at the large
       epsilon; more steps and more restarts never raise robust accuracy;
       FGSM never beats PGD; Square never beats the white-box attacks;
       robust accuracy unchanged when the logits are scaled; few zero input
       gradients; the outputs are logits; the forward pass is deterministic;
       every adversarial example is within epsilon, the range, and finite.

    Attacks see a `RobustModel`'s evaluation logits (`RobustModel.LOGIT_USES`:
    the cosines for a hypersphere head, what it serves and what its
    validation attacks; not the training attacks' `s * cos`); any other Keras
    model or callable is attacked through its outputs.

    Args:
        model: a Keras model (a `RobustModel` or a classifier returning
            logits), a callable from images to logits, or a `.keras` path.
        data: `(x, y)` arrays, a `tf.data.Dataset` of `(images, labels)`
            (batched or not), or a dataset name/file for `tfrobust.data`.
        norm: `"linf"` or `"l2"`; None takes the model's evaluation attack's
            norm (a `RobustModel`), else `"linf"`.
        epsilon: the threat model's radius; None takes the `RobustModel`'s
            evaluation attack's epsilon.
        attacks: `"standard"` (APGD-CE, APGD-T, FAB-T, Square 5000) or a list
            of attack names, configs or instances (a comma-separated string
            of names works too); names are built at `epsilon` and `norm`.
        sweep_attacks: attacks for the epsilon sweep (names or instances;
            `"pgd"` is PGD-20). Their step sizes scale with epsilon.
        epsilons: budgets of the sweep; None: 0, 1/4, 1/2, 3/4, 1, 1.5 and 2
            times `epsilon`. 0, `epsilon` and the large epsilon are always added.
        checks: True (all), False (none) or a list of names from `CHECKS`.
        split, limit: the split and number of examples, for dataset names
            (limit applies to arrays and datasets too).
        batch_size: examples per attack call.
        clip_min, clip_max: the valid pixel range.
        seed: seed of the attacks built from names.
        tolerance: slack, in accuracy, of the checks that compare two attacks
            (attacks are random; 0.02 is 2 points in 100).
        cache_dir: keep each finished unit (an attack on a batch) here; an
            interrupted evaluation run again with the same arguments skips
            finished units.
        verbose: show a progress bar.

    Returns:
        An `EvaluationReport`; `report.save(directory)` writes `report.json`
        and `report.png`.

    Example:

    >>> report = tfrobust.evaluate(model, "mnist-sample", epsilon=0.3, limit=500)  # doctest: +SKIP
    >>> print(report)                                                            # doctest: +SKIP
    >>> report.save("runs/eval")                                                 # doctest: +SKIP
    """
    started = time.perf_counter()
    model, model_identity = _resolve_model(model)
    norm, epsilon = _threat_model(model, norm, epsilon)
    clip_min = validation.check_number("clip_min", clip_min)
    clip_max = validation.check_number("clip_max", clip_max)
    batch_size = validation.check_number("batch_size", batch_size, minimum=1, integer=True)
    tolerance = validation.check_number("tolerance", tolerance, minimum=0.0, maximum=1.0)
    seed = validation.check_number("seed", seed, minimum=0, integer=True)
    enabled = _check_names(checks)
    common = {"epsilon": epsilon, "norm": norm, "seed": seed, "clip_min": clip_min,
              "clip_max": clip_max}
    members = _ensemble_members(attacks, common)
    sweepers = [_named_attack(a, common) for a in _as_list(sweep_attacks, "sweep_attacks")]
    x, y, data_identity = _resolve_data(data, split, limit, clip_min, clip_max)
    logits_fn = _evaluation_logits(model)

    context = [model_identity.get("weights_sha256"), data_identity["sha256"]]
    cache = UnitStore(cache_dir if model_identity.get("weights_sha256") else None)
    if cache_dir is not None and cache.directory is None and verbose:
        print("tfrobust.evaluate: the model has no weights to identify it by; "
              "finished units are not cached on disk.")
    runner = _Runner(logits_fn, x, y, batch_size, cache, context, norm, clip_min, clip_max)
    timings = {}

    # 1. Clean accuracy and the forward-pass checks.
    tick = time.perf_counter()
    logits = runner.logits(x)
    num_classes = logits.shape[-1]
    validation.check_labels(y, num_classes=num_classes, name="y")
    correct = np.argmax(logits, -1) == y
    runner.set_correct(correct)
    timings["clean"] = time.perf_counter() - tick

    square_members = [i for i, m in enumerate(members) if isinstance(m, attacks_lib.Square)]
    standalone_square = "black_box" in enabled and bool(square_members)
    white_box_members = [i for i, m in enumerate(members)
                         if not isinstance(m, attacks_lib.Square)
                         and (not square_members or i < square_members[0])]

    grid = _sweep_grid(epsilons, epsilon, norm, clip_min, clip_max, x.shape[1:])
    eps_large = grid[-1]
    base = attacks_lib.PGD(num_steps=_BASE_STEPS, **common)
    planned = runner.num_chunks * (len(members) + len(sweepers) * len(grid) + 7)
    progress = keras.utils.Progbar(planned, unit_name="unit") if verbose else None
    runner.progress = progress

    # 2. The ensemble, each member on the points still robust.
    tick = time.perf_counter()
    ensemble = runner.ensemble(members, standalone=set(square_members) if standalone_square
                               else set())
    timings["ensemble"] = time.perf_counter() - tick

    # 3. The epsilon sweep.
    tick = time.perf_counter()
    curves = []
    for attack in sweepers:
        accuracy = [runner.accuracy(runner.standalone(_at_epsilon(attack, e)))
                    for e in grid]
        curves.append({"name": _label(attack), "config": attacks_lib.serialize(attack),
                       "accuracy": accuracy})
    timings["sweep"] = time.perf_counter() - tick

    # 4. The checks.
    tick = time.perf_counter()
    results, check_attacks = _run_checks(enabled, runner, model, logits_fn, logits, correct, x, y, base,
                          members, ensemble, white_box_members, square_members, curves, grid,
                          eps_large, common, tolerance, clip_min, clip_max)
    timings["checks"] = time.perf_counter() - tick
    timings["total"] = time.perf_counter() - started
    if progress is not None:
        progress.update(planned, finalize=True)

    n = len(y)
    names = [_label(m) for m in members]
    broken_by = [("misclassified" if b == -2 else "robust" if b == -1 else names[b])
                 for b in ensemble["broken_by"]]
    attack_rows = []
    for i, member in enumerate(members):
        attack_rows.append({
            "name": names[i], "config": attacks_lib.serialize(member),
            "attacked": int(ensemble["attacked"][i]), "broken": int(ensemble["broken"][i]),
            "robust_accuracy_after": float(ensemble["after"][i]),
            "seconds": float(ensemble["seconds"][i]),
        })
    from tfrobust.utils.provenance import provenance

    return EvaluationReport(
        model=model_identity,
        data={**data_identity, "num_examples": n},
        threat_model={"norm": norm, "epsilon": epsilon, "clip_min": clip_min,
                      "clip_max": clip_max},
        clean_accuracy=float(np.mean(correct)),
        robust_accuracy=float(np.mean(ensemble["broken_by"] == -1)),
        attacks=attack_rows,
        broken_by=broken_by,
        sweep={"epsilons": [float(e) for e in grid], "curves": curves},
        checks=results,
        check_attacks=check_attacks,
        timings={k: round(v, 3) for k, v in timings.items()},
        units={"computed": cache.computed, "reused": cache.reused},
        provenance=provenance(),
    )


# -- the work: attack units over batches of the correctly classified points ---------------
class _Runner:
    """Runs attacks on batches of the correctly classified examples, through the cache."""

    def __init__(self, logits_fn, x, y, batch_size, cache, context, norm, clip_min, clip_max):
        self.logits_fn = logits_fn
        self._predict = tf.function(logits_fn, reduce_retracing=True)
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.cache = cache
        self.context = context
        self.norm, self.clip_min, self.clip_max = norm, clip_min, clip_max
        self.progress = None
        self._attacks = {}
        self._predictors = {}
        self.validity = {}

    def logits(self, x, predict=None):
        predict = predict or self._predict
        out = [predict(tf.constant(x[i:i + self.batch_size])).numpy()
               for i in range(0, len(x), self.batch_size)]
        return np.concatenate(out).astype(np.float32)

    def set_correct(self, correct):
        self.correct = correct
        self.correct_index = np.flatnonzero(correct)
        self.chunks = [self.correct_index[i:i + self.batch_size]
                       for i in range(0, len(self.correct_index), self.batch_size)]

    @property
    def num_chunks(self):
        return len(self.chunks)

    def _tick(self):
        if self.progress is not None:
            self.progress.add(1)

    def _attack(self, attack, tag):
        """One attack object per config and logits (each keeps its own compiled function)."""
        key = digest(attacks_lib.serialize(attack), tag)
        if key not in self._attacks:
            self._attacks[key] = attack
        return self._attacks[key]

    def unit(self, attack, indices, unit_seed, logits_fn=None, tag=""):
        """Attack examples `indices`; returns `fooled`, per example, and validity counts."""
        config = attacks_lib.serialize(attack)
        key = digest(self.context, config, tag, int(unit_seed), np.asarray(indices, np.int64))
        result = self.cache.get(key)
        if result is None:
            started = time.perf_counter()
            attack = self._attack(attack, tag)
            fn = logits_fn or self.logits_fn
            x, y = self.x[indices], self.y[indices]
            x_adv = attack(fn, x, y, seed=tf.constant([attack.seed, int(unit_seed)], tf.int32))
            x_adv = np.asarray(x_adv, np.float32)
            if tag not in self._predictors:
                self._predictors[tag] = tf.function(fn, reduce_retracing=True)
            fooled = np.argmax(self.logits(x_adv, self._predictors[tag]), -1) != y
            flat = (x_adv - x).reshape(len(x), -1)
            if self.norm == "linf":
                distance = np.abs(flat).max(axis=1, initial=0.0)
            else:
                distance = np.sqrt(np.square(flat.astype(np.float64)).sum(axis=1))
            finite = np.isfinite(x_adv.reshape(len(x), -1)).all(axis=1)
            slack = 1e-5 * max(1.0, attack.epsilon)
            outside_ball = ~(distance <= attack.epsilon + slack)
            with np.errstate(invalid="ignore"):
                outside_range = ~((x_adv.reshape(len(x), -1).min(axis=1, initial=np.inf)
                                   >= self.clip_min - 1e-6)
                                  & (x_adv.reshape(len(x), -1).max(axis=1, initial=-np.inf)
                                     <= self.clip_max + 1e-6))
            valid = finite & ~outside_ball & ~outside_range
            result = {"fooled": fooled & valid, "outside_ball": outside_ball,
                      "outside_range": outside_range, "not_finite": ~finite,
                      "seconds": np.float64(time.perf_counter() - started)}
            self.cache.put(key, result)
        name = _label(attack) + (f" [{tag}]" if tag else "")
        counts = self.validity.setdefault(
            name, {"outside_ball": 0, "outside_range": 0, "not_finite": 0, "checked": 0})
        for field in ("outside_ball", "outside_range", "not_finite"):
            counts[field] += int(np.sum(result[field]))
        counts["checked"] += len(indices)
        self._tick()
        return result

    def standalone(self, attack, logits_fn=None, tag=""):
        """`attack` on every correctly classified example: `fooled` per such example."""
        fooled = [self.unit(attack, chunk, b, logits_fn, tag)["fooled"]
                  for b, chunk in enumerate(self.chunks)]
        return np.concatenate(fooled) if fooled else np.zeros((0,), bool)

    def accuracy(self, fooled):
        return float((len(self.correct_index) - int(np.sum(fooled))) / len(self.y))

    def ensemble(self, members, standalone=frozenset()):
        """Each member only on the points still robust; `standalone` members on all of them."""
        broken_by = np.where(self.correct, -1, -2)
        attacked = np.zeros(len(members), np.int64)
        seconds = np.zeros(len(members))
        for b, chunk in enumerate(self.chunks):
            alive = np.ones(len(chunk), bool)
            for i, member in enumerate(members):
                if i in standalone:
                    result = self.unit(member, chunk, b)
                    hit = alive & result["fooled"]
                elif alive.any():
                    result = self.unit(member, chunk[alive], b)
                    hit = np.zeros(len(chunk), bool)
                    hit[alive] = result["fooled"]
                else:
                    self._tick()
                    continue
                attacked[i] += int(alive.sum())
                seconds[i] += float(result["seconds"])
                broken_by[chunk[hit]] = i
                alive &= ~hit
        broken = np.array([np.sum(broken_by == i) for i in range(len(members))], np.int64)
        after = (len(self.correct_index) - np.cumsum(broken)) / len(self.y)
        return {"broken_by": broken_by, "attacked": attacked, "broken": broken,
                "after": after, "seconds": seconds}


# -- the checks ---------------------------------------------------------------------------
def _run_checks(enabled, runner, model, logits_fn, logits, correct, x, y, base, members,
                ensemble, white_box_members, square_members, curves, grid, eps_large, common,
                tolerance, clip_min, clip_max):
    results = []
    used = {}  # the attacks the checks ran, by display name: their configs for the report

    def standalone(attack, **kwargs):
        used[_label(attack)] = attacks_lib.serialize(attack)
        return runner.standalone(attack, **kwargs)

    robust_accuracy = float(np.mean(ensemble["broken_by"] == -1))
    base_name = _label(base)
    want = enabled.__contains__
    base_fooled = standalone(base) if any(
        want(c) for c in ("more_steps", "more_restarts", "single_step", "logit_scale",
                          "black_box")) else None
    base_accuracy = runner.accuracy(base_fooled) if base_fooled is not None else None
    white_box = np.zeros(len(runner.correct_index), bool)
    position = {index: k for k, index in enumerate(runner.correct_index)}
    for k, b in enumerate(ensemble["broken_by"]):
        if b in white_box_members:
            white_box[position[k]] = True
    if base_fooled is not None:
        white_box |= base_fooled

    if want("epsilon_zero"):
        clean_accuracy = float(np.mean(correct))
        results.append(checks_lib.epsilon_zero(
            clean_accuracy, {c["name"]: c["accuracy"][0] for c in curves}))
    if want("monotone_in_epsilon"):
        results.append(checks_lib.monotone_in_epsilon(
            grid, {c["name"]: c["accuracy"] for c in curves}, tolerance) if curves else
            _skipped("monotone_in_epsilon", "no sweep attacks"))
    if want("large_epsilon"):
        middle = np.full((1,) + x.shape[1:], (clip_min + clip_max) / 2, np.float32)
        middle_class = int(np.argmax(runner.logits(middle), -1)[0])
        bound = float(np.mean(y == middle_class))
        results.append(checks_lib.large_epsilon(
            eps_large, {c["name"]: c["accuracy"][-1] for c in curves}, bound, tolerance)
            if curves else _skipped("large_epsilon", "no sweep attacks"))
    if want("more_steps"):
        longer = attacks_lib.PGD(num_steps=_MORE * _BASE_STEPS, **common)
        fooled = standalone(longer)
        white_box |= fooled
        results.append(checks_lib.more_steps(base_name, base_accuracy, _label(longer),
                                             runner.accuracy(fooled), tolerance))
    if want("more_restarts"):
        restarts = attacks_lib.PGD(num_steps=_BASE_STEPS, num_restarts=_MORE, **common)
        fooled = standalone(restarts)
        white_box |= fooled
        results.append(checks_lib.more_restarts(base_name, base_accuracy, _label(restarts),
                                                runner.accuracy(fooled), tolerance))
    if want("single_step"):
        fgsm = attacks_lib.FGSM(**common)
        fooled = standalone(fgsm)
        white_box |= fooled
        results.append(checks_lib.single_step(base_name, base_accuracy, _label(fgsm),
                                              runner.accuracy(fooled), tolerance))
    if want("black_box"):
        square = (members[square_members[0]] if square_members else
                  attacks_lib.Square(num_queries=_CHECK_SQUARE_QUERIES, **common))
        square_fooled = standalone(square)
        results.append(checks_lib.black_box(runner.accuracy(white_box), _label(square),
                                            runner.accuracy(square_fooled), tolerance))
    if want("logit_scale"):
        centred = logits - logits.mean(axis=1, keepdims=True)
        spread = float(centred.std()) or 1.0
        scaled_accuracy = {}
        # Down to a unit spread (at least 10x) and up by at least 10x.
        for scale in (min(0.1, 1.0 / spread), max(10.0, 10.0 / spread)):
            fooled = standalone(base, logits_fn=_scaled(logits_fn, scale),
                                       tag=f"logits x {scale:.6g}")
            scaled_accuracy[scale] = runner.accuracy(fooled)
        results.append(checks_lib.logit_scale(base_name, robust_accuracy, base_accuracy,
                                              scaled_accuracy, tolerance))
    if want("zero_gradient"):
        results.append(checks_lib.zero_gradient(
            _count_zero_gradients(logits_fn, x[runner.correct_index], y[runner.correct_index],
                                  runner.batch_size),
            len(runner.correct_index), tolerance))
    if want("outputs_are_logits"):
        rows = ((logits.min(axis=1) >= -1e-6) & (logits.max(axis=1) <= 1 + 1e-6)
                & (np.abs(logits.sum(axis=1) - 1) <= 1e-4))
        results.append(checks_lib.outputs_are_logits(int(rows.sum()), len(rows)))
    if want("deterministic"):
        again = runner.logits(x)
        scale = max(1.0, float(np.abs(logits).max()))
        results.append(checks_lib.deterministic(
            float(np.abs(again - logits).max(initial=0.0)) / scale,
            int(np.sum(np.argmax(again, -1) != np.argmax(logits, -1))), len(x)))
    if want("valid_examples"):
        violations = {name: {k: v for k, v in counts.items() if k != "checked"}
                      for name, counts in runner.validity.items()}
        results.append(checks_lib.valid_examples(
            violations, sum(c["checked"] for c in runner.validity.values())))
    order = {name: i for i, name in enumerate(CHECKS)}
    return sorted(results, key=lambda c: order[c.name]), used


def _scaled(logits_fn, scale):
    def scaled(images):
        return scale * logits_fn(images)

    return scaled


def _skipped(name, why):
    return checks_lib.Check(name, None, f"skipped: {why}", "")


def _count_zero_gradients(logits_fn, x, y, batch_size):
    @tf.function(reduce_retracing=True)
    def zero_rows(images, labels):
        with tf.GradientTape() as tape:
            tape.watch(images)
            loss = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(
                labels, logits_fn(images), from_logits=True))
        grad = tape.gradient(loss, images, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        flat = tf.reshape(grad, [tf.shape(images)[0], -1])
        return tf.reduce_sum(tf.cast(tf.reduce_all(tf.equal(flat, 0.0), axis=1), tf.int32))

    return int(sum(int(zero_rows(tf.constant(x[i:i + batch_size]),
                                 tf.constant(y[i:i + batch_size])))
                   for i in range(0, len(x), batch_size)))


# -- inputs -------------------------------------------------------------------------------
def _resolve_model(model):
    identity = {}
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
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


def _threat_model(model, norm, epsilon):
    from tfrobust.models import RobustModel

    reference = None
    if isinstance(model, RobustModel):
        reference = model.eval_attack or model.attack
    if epsilon is None:
        if reference is None:
            raise ValueError("Expected epsilon (the threat model's radius); the model carries "
                             "no evaluation attack to take it from. Received: epsilon=None")
        epsilon = reference.epsilon
        norm = reference.norm if norm is None else norm
    norm = validation.check_choice("norm", "linf" if norm is None else norm, ("linf", "l2"))
    epsilon = validation.check_number("epsilon", epsilon, minimum=0.0)
    return norm, float(epsilon)


def _evaluation_logits(model):
    """The logits attacks see: a `RobustModel`'s evaluation logits (`LOGIT_USES`)."""
    return attacks_lib.as_logits_fn(model)


def _resolve_data(data, split, limit, clip_min, clip_max):
    if limit is not None:
        limit = validation.check_number("limit", limit, minimum=1, integer=True)
    identity = {"name": None, "split": None, "limit": limit}
    if isinstance(data, (str, os.PathLike)):
        from tfrobust import data as data_lib

        x, y = data_lib.load_arrays(os.fspath(data), split, limit=limit)
        identity.update(name=os.fspath(data), split=split)
    elif isinstance(data, tf.data.Dataset):
        xs, ys, count = [], [], 0
        for batch in data:
            if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                raise ValueError("Expected a dataset of (images, labels). Received: elements "
                                 f"of type {type(batch).__name__}")
            images, labels = np.asarray(batch[0]), np.asarray(batch[1])
            if images.ndim == 3:  # unbatched elements
                images, labels = images[None], np.reshape(labels, (1,))
            xs.append(images)
            ys.append(np.reshape(labels, (len(images), -1))[:, 0] if labels.ndim > 1
                      else labels)
            count += len(images)
            if limit is not None and count >= limit:
                break
        if not xs:
            raise ValueError("Expected a non-empty dataset. Received: a dataset with no "
                             "elements")
        x, y = np.concatenate(xs)[:limit], np.concatenate(ys)[:limit]
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


def _check_names(checks):
    if checks is True:
        return set(CHECKS)
    if checks is False or checks is None:
        return set()
    names = set(_as_list(checks, "checks"))
    unknown = sorted(names - set(CHECKS))
    if unknown:
        raise ValueError(f"Expected checks among {list(CHECKS)}. Received: checks={checks!r}")
    return names


def _as_list(value, name):
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    if value is None:
        return []
    return [value]


def _named_attack(identifier, common):
    """An attack from a name at the evaluation's threat model; instances as they are."""
    if isinstance(identifier, str) and identifier.lower() == "pgd":
        return attacks_lib.PGD(num_steps=_BASE_STEPS, **common)
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


def _ensemble_members(attacks, common):
    members = []
    for item in _as_list(attacks, "attacks"):
        if isinstance(item, str) and item.lower() in ("standard", "autoattack"):
            members.extend(attacks_lib.standard_attacks(**common))
            continue
        attack = _named_attack(item, common)
        if isinstance(attack, attacks_lib.AutoAttack):
            members.extend(attack.attacks)
        else:
            members.append(attack)
    if not members:
        raise ValueError(f"Expected at least one attack. Received: attacks={attacks!r}")
    return members


def _sweep_grid(epsilons, epsilon, norm, clip_min, clip_max, image_shape):
    """The sweep's budgets, from 0 to a budget that reaches the mid-range image from anywhere."""
    half_range = (clip_max - clip_min) / 2
    large = half_range if norm == "linf" else half_range * float(np.sqrt(np.prod(image_shape)))
    if epsilons is None:
        values = [m * epsilon for m in _SWEEP_MULTIPLES]
    else:
        values = [validation.check_number("epsilons", e, minimum=0.0)
                  for e in _as_list(epsilons, "epsilons")]
    values = {float(v) for v in values if v < large} | {0.0, float(min(epsilon, large)), large}
    return sorted(values)


def _at_epsilon(attack, epsilon):
    """A copy of `attack` at another budget, its step size scaled with it."""
    config = attack.get_config()
    ratio = epsilon / attack.epsilon if attack.epsilon > 0 else 0.0
    config["epsilon"] = epsilon
    if config.get("step_size") is not None:
        config["step_size"] = config["step_size"] * ratio
    return type(attack).from_config(config)


def _label(attack):
    """A short display name: `pgd-20`, `pgd-20x5`, `apgd-dlr`, `square-5000`..."""
    name = attack.registry_name or type(attack).__name__
    if isinstance(attack, attacks_lib.FGSM):
        return name
    if isinstance(attack, attacks_lib.PGD):
        name = f"{name}-{attack.num_steps}"
    if isinstance(attack, attacks_lib.Square):
        name = f"{name}-{attack.num_queries}"
    restarts = getattr(attack, "num_restarts", 1)
    return f"{name}x{restarts}" if restarts > 1 else name
