"""The evaluation's work: attack units over batches of the correctly classified points."""

import collections
import time

import numpy as np
import tensorflow as tf

from tfrobust import attacks as attacks_lib
from tfrobust.evaluation.inputs import label
from tfrobust.evaluation.store import digest

_VIOLATIONS = ("outside_ball", "outside_range", "not_finite")

# The logits of one scale: `search` (what the attacks compute with), `judge` (what
# decides whether an example fools the model) and compiled predictions of each.
_Logits = collections.namedtuple("_Logits", "search judge predict_search predict")


class Runner:
    """Runs attacks on batches of the correctly classified examples, through a cache.

    A unit is one attack on one batch (a fixed slice of `batch_size` correctly
    classified examples, or the part of it an ensemble member still has to
    attack). Its result is kept in `cache` under a key of everything it
    depends on, so a rerun (an interrupted evaluation) reuses it. Every unit
    also counts the adversarial examples outside the ball, outside the range or
    not finite (`validity`, per attack); those never count as fooling the model.

    Args:
        logits_fn: the function from images to the logits attacks see; whether an
            adversarial example fools the model is always decided by it.
        x, y: the examples and their labels.
        batch_size: examples per unit.
        cache: a `UnitStore`.
        context: what identifies the model and data in unit keys.
        norm, clip_min, clip_max: the threat model's norm and pixel range.
        shard: `(k, n)`: compute only the units of batches `b` with `b % n == k - 1`
            (every stage's units of a batch are one shard's, so an ensemble member
            finds what the earlier ones left); the others return placeholders
            (nothing fooled), fit only for filling the cache. None: every unit.
        search_fn: the logits the gradient attacks compute with, if not `logits_fn`
            (the model in bfloat16, `evaluation.precision`): they search with it,
            and each adversarial example they return is judged by `logits_fn`.
            Gradient-free attacks (Square) always query `logits_fn`: in bfloat16
            Square broke 0 of 8 tries on two points it broke 6 of 8 times in float32.
    """

    def __init__(self, logits_fn, x, y, batch_size, cache, context, norm, clip_min, clip_max,
                 shard=None, search_fn=None):
        self.shard = shard
        self.logits_fn = logits_fn
        self.search_fn = search_fn or logits_fn
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.cache = cache
        self.context = context
        self.norm, self.clip_min, self.clip_max = norm, clip_min, clip_max
        self.progress = None  # a `progress.Progress`, or None
        self.stage = ""  # prefixes the progress key of the units run: "sweep", "check"
        self._attacks = {}
        self._functions = {}  # scale -> `_logits_at(scale)`
        self.validity = {}

    def logits(self, x, predict=None):
        """The logits of `x`, batch by batch, as a float32 array."""
        predict = predict or self._logits_at(None).predict
        out = [predict(tf.constant(x[i:i + self.batch_size])).numpy()
               for i in range(0, len(x), self.batch_size)]
        return np.concatenate(out).astype(np.float32)

    def set_correct(self, correct):
        """Which examples the model classifies correctly: the ones attacks run on."""
        self.correct = correct
        self.correct_index = np.flatnonzero(correct)
        self.chunks = [self.correct_index[i:i + self.batch_size]
                       for i in range(0, len(self.correct_index), self.batch_size)]

    def owns(self, batch):
        """Whether this runner's shard computes the units of batch number `batch`."""
        return self.shard is None or batch % self.shard[1] == self.shard[0] - 1

    @property
    def owned_examples(self):
        """Correctly classified examples in the batches this shard computes."""
        return sum(len(chunk) for b, chunk in enumerate(self.chunks) if self.owns(b))

    @property
    def num_chunks(self):
        """Units per standalone attack (batches of correctly classified examples)."""
        return len(self.chunks)

    def progress_key(self, attack, tag=""):
        """What the progress line calls a unit of `attack` in the current stage."""
        return " ".join(part for part in (self.stage, label(attack), tag and f"[{tag}]") if part)

    def plan(self, attack, examples, tag=""):
        """Announce `examples` of `attack`'s work to the progress line."""
        if self.progress is not None:
            self.progress.plan(self.progress_key(attack, tag), examples, passes(attack))

    def _attack(self, attack, tag):
        """One attack object per config and logits (each keeps its own compiled function):
        a copy of `attack` that stops working on an example once it is fooled
        (`Attack.stop_when_fooled`: what a unit counts is the same, and its cost
        on broken examples is gone)."""
        key = digest(attacks_lib.serialize(attack), tag)
        if key not in self._attacks:
            self._attacks[key] = attack.stopping_when_fooled()
        return self._attacks[key]

    def _logits_at(self, scale):
        """The `_Logits` times `scale` (None: as they are); built once per scale, so
        nothing traces twice."""
        if scale not in self._functions:
            search, judge = self.search_fn, self.logits_fn
            if scale is not None:
                search, judge = scaled(search, scale), scaled(judge, scale)
            predict = tf.function(judge, reduce_retracing=True)
            predict_search = (predict if self.search_fn is self.logits_fn
                              else tf.function(search, reduce_retracing=True))
            self._functions[scale] = _Logits(search, judge, predict_search, predict)
        return self._functions[scale]

    def unit(self, attack, indices, unit_seed, scale=None):
        """Attack examples `indices`; returns `fooled`, per example, and validity counts.

        Args:
            attack: the `Attack`.
            indices: the examples (int array).
            unit_seed: the unit's seed, with the attack's own: `[attack.seed, unit_seed]`.
            scale: attack the logits times `scale` (the logit-scale check), or None.
        """
        tag = scale_tag(scale)
        if not self.owns(int(unit_seed)):  # another shard's: computed there
            nothing = np.zeros(len(indices), bool)
            return {"fooled": nothing, "seconds": np.float64(0.0),
                    **{field: nothing for field in _VIOLATIONS}}
        config = attacks_lib.serialize(attack)
        key = digest(self.context, config, tag, int(unit_seed), np.asarray(indices, np.int64))
        result = self.cache.get(key)
        computed = result is None
        if computed:
            started = time.perf_counter()
            attack = self._attack(attack, tag)
            logits = self._logits_at(scale)
            if attack.gradient_free:  # a query search needs the model's own margins
                logits = logits._replace(search=logits.judge, predict_search=logits.predict)
            x, y = self.x[indices], self.y[indices]
            seed = tf.constant([attack.seed, int(unit_seed)], tf.int32)
            x_adv = np.array(attack(logits.search, x, y, seed=seed), np.float32)
            fooled = np.argmax(self.logits(x_adv, logits.predict), -1) != y
            if logits.search is not logits.judge:
                x_adv, fooled = self._settle(attack, tag, logits, x, y, x_adv, fooled, seed)
            result = self._violations(x, x_adv, attack.epsilon)
            valid = ~(result["outside_ball"] | result["outside_range"] | result["not_finite"])
            result.update(fooled=fooled & valid,
                          seconds=np.float64(time.perf_counter() - started))
            self.cache.put(key, result)
        name = label(attack) + (f" [{tag}]" if tag else "")
        counts = self.validity.setdefault(name, {**dict.fromkeys(_VIOLATIONS, 0), "checked": 0})
        for field in _VIOLATIONS:
            counts[field] += int(np.sum(result[field]))
        counts["checked"] += len(indices)
        if self.progress is not None:
            self.progress.advance(self.progress_key(attack, tag), len(indices),
                                  float(result["seconds"]) if computed else None)
        return result

    def _settle(self, attack, tag, logits, x, y, x_adv, fooled, seed):
        """Attack again, with the judging logits, the examples the search believes it
        broke but that do not fool the model (a lower-precision search stops at the
        first step across its own decision boundary, which can be a hair short of
        the model's); returns the updated `x_adv` and `fooled`."""
        seen = np.argmax(self.logits(x_adv, logits.predict_search), -1) != y
        disputed = np.flatnonzero(seen & ~fooled)
        if len(disputed):
            # A copy of its own: an attack object keeps one compiled function, for the last
            # logits it was called on, and alternating would retrace it at every unit.
            judging = self._attack(attack, f"{tag} [judged]")
            again = np.array(judging(logits.judge, x[disputed], y[disputed], seed=seed),
                             np.float32)
            x_adv[disputed] = again
            fooled[disputed] = np.argmax(self.logits(again, logits.predict), -1) != y[disputed]
        return x_adv, fooled

    def _violations(self, x, x_adv, epsilon):
        """Per example: outside the epsilon-ball, outside the pixel range, not finite."""
        flat = (x_adv - x).reshape(len(x), -1)
        if self.norm == "linf":
            distance = np.abs(flat).max(axis=1, initial=0.0)
        else:
            distance = np.sqrt(np.square(flat.astype(np.float64)).sum(axis=1))
        pixels = x_adv.reshape(len(x), -1)
        finite = np.isfinite(pixels).all(axis=1)
        slack = 1e-5 * max(1.0, epsilon)
        with np.errstate(invalid="ignore"):
            inside_range = ((pixels.min(axis=1, initial=np.inf) >= self.clip_min - 1e-6)
                            & (pixels.max(axis=1, initial=-np.inf) <= self.clip_max + 1e-6))
        return {"outside_ball": ~(distance <= epsilon + slack), "outside_range": ~inside_range,
                "not_finite": ~finite}

    def standalone(self, attack, scale=None):
        """`attack` on every correctly classified example (on the logits times `scale`,
        if given): `fooled` per such example."""
        fooled = [self.unit(attack, chunk, b, scale)["fooled"]
                  for b, chunk in enumerate(self.chunks)]
        return np.concatenate(fooled) if fooled else np.zeros((0,), bool)

    def accuracy(self, fooled):
        """Robust accuracy over all examples when `fooled` (per correct example) are broken."""
        return float((len(self.correct_index) - int(np.sum(fooled))) / len(self.y))

    def ensemble(self, members):
        """The members in turn, each only on the points still robust (`attack_in_turn`).

        Each batch of correctly classified examples is a fixed group, so a
        member's unit on it depends only on what earlier members found there
        (and can be reused from the cache).

        Returns:
            An `attacks.EnsembleCounts`.
        """
        def attack_batch(index, indices, group):
            result = self.unit(members[index], indices, group)
            return result["fooled"], float(result["seconds"])

        counts = attacks_lib.attack_in_turn(len(members), self.correct, attack_batch,
                                            self.batch_size, regroup=False)
        if self.progress is not None:  # later members attacked fewer points than planned
            for member in members:
                self.progress.finish(self.progress_key(member))
        return counts


def scale_tag(scale):
    """How units on the logits times `scale` are tagged (None: the logits as they are)."""
    return "" if scale is None else f"logits x {scale:.6g}"


def scaled(logits_fn, scale):
    """`logits_fn` times `scale`."""
    def logits_times_scale(images):
        return scale * logits_fn(images)

    return logits_times_scale


def passes(attack):
    """Roughly the forward and backward passes `attack` makes per example (for estimates)."""
    return ((attack.cost or 1) * (getattr(attack, "num_restarts", 1) or 1)
            * (getattr(attack, "num_target_classes", 1) or 1))
