"""Auto-PGD (Croce & Hein 2020): PGD with momentum and a self-tuning step size."""

import tensorflow as tf

from tfrobust.attacks import compaction
from tfrobust.attacks import losses as attack_losses
from tfrobust.attacks import projections
from tfrobust.attacks.base import Attack, register
from tfrobust.utils import validation

# Algorithm 1 of the paper: the step size is halved at a checkpoint when fewer
# than a fraction RHO of the steps since the last one increased the loss.
_RHO = 0.75
_MOMENTUM = 0.75
_TINY = 1e-12


def checkpoints(num_steps):
    """The step counts `w_j` after which APGD may halve its step size.

    `w_j = ceil(p_j * num_steps)` with `p_0 = 0`, `p_1 = 0.22` and
    `p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`, kept while `p_j <= 1`.
    The `p_j` are computed exactly, in hundredths: in floating point
    `0.41 + 0.16` is `0.5700000000000001`, whose ceiling times 100 would be 58
    instead of 57 (the reference implementation, which counts in integers,
    also gives 57). Repeated values (short runs) are dropped.

    Returns:
        A sorted list of ints starting with 0, e.g.
        `[0, 22, 41, 57, 70, 80, 87, 93, 99]` for 100 steps.
    """
    points = [0]
    previous, current = 0, 22  # p_{j-1}, p_j in hundredths
    while current <= 100:
        step = -(-current * num_steps // 100)  # exact ceil(p_j * num_steps)
        if step > points[-1]:
            points.append(step)
        previous, current = current, current + max(current - previous - 3, 6)
    return points


def _per_example(values, like):
    """Reshape a (B,) vector to broadcast against the batch `like`: (B, 1, ..., 1)."""
    return tf.reshape(values, [-1] + [1] * (like.shape.rank - 1))


def _check_num_classes(logits, minimum, what):
    num_classes = logits.shape[-1]
    if num_classes is not None and num_classes < minimum:
        raise ValueError(
            f"Expected at least {minimum} classes for {what}. Received: {num_classes} classes"
        )


def merge_runs(best, new):
    """Keep, per example, a run that misclassifies it, else the one with the higher loss.

    Both arguments are `(x, found, loss)` triples: images (B, ...), whether the
    run found a misclassified point (B,) and its best loss (B,). Among
    successful runs the earlier one is kept.
    """
    x_best, found_best, loss_best = best
    x_new, found_new, loss_new = new
    take = tf.logical_and(
        tf.logical_not(found_best), tf.logical_or(found_new, loss_new > loss_best)
    )
    return (
        tf.where(_per_example(take, x_best), x_new, x_best),
        tf.logical_or(found_best, found_new),
        tf.where(take, loss_new, loss_best),
    )


def _drop_fooled(state, outputs):
    """Move the examples the run has fooled out of `state` and into `outputs`.

    `state` is the loop state of `APGD._run_once` after its counter: the inputs
    (whose last entry is each example's position in the batch), then per
    example x_adv, x_prev, grad, loss, x_best, grad_best, loss_best, x_fool,
    found and four step-size statistics. A fooled example's result is its
    fooling point; the rest of the batch goes on.
    """
    inputs, found = state[0], state[9]
    gone = tf.where(found)[:, 0]
    outputs = compaction.scatter(outputs, tf.gather(inputs[-1], gone),
                                 compaction.gather((state[8], found, state[7]), gone))
    return compaction.gather(state, tf.where(tf.logical_not(found))[:, 0]), outputs


@register("apgd")
class APGD(Attack):
    """Auto-PGD: projected gradient ascent with momentum and an adaptive step size.

    Croce & Hein, "Reliable evaluation of adversarial robustness with an
    ensemble of diverse parameter-free attacks", ICML 2020 (Algorithm 1).

    Starting with step size `2 * epsilon`, each step mixes the projected
    steepest-ascent step with the previous move (momentum 0.75):

    ```
    z_{k+1} = P(x_k + eta * dir(grad L(x_k)))
    x_{k+1} = P(x_k + 0.75 * (z_{k+1} - x_k) + 0.25 * (x_k - x_{k-1}))
    ```

    At the checkpoints `w_j` (see `checkpoints`) the step size of an example
    is halved, and it restarts from its best point so far, if at most 75% of
    the steps since the last checkpoint increased its loss, or if its step
    size was not halved at the last checkpoint and its best loss has not
    improved since. Each example keeps its highest-loss point and, separately,
    the last point that fooled the model; it gets the fooling point if there
    is one, else the highest-loss point. Restarts keep, per example, the first
    run that fooled the model, else the run with the highest loss.

    With `stop_when_fooled` (see `Attack`; `tfrobust.evaluate` and
    `run_ensemble` set it) an example leaves the batch at the step that fools
    it, with that point, and a restart attacks only the examples no earlier run
    fooled (the reference's ensemble does the same between its attacks): the
    same examples are fooled, for fewer passes.

    Args:
        epsilon: radius of the threat model.
        num_steps: gradient steps per restart (>= 0; 0 returns the start point).
        num_restarts: independent runs per example (>= 1).
        loss: attack loss name (`"ce"`, `"dlr"`, `"cw"`, `"kl"`) or a callable
            `(logits, labels, clean_logits=None) -> (B,)`. The registered
            aliases `"apgd-ce"` and `"apgd-dlr"` fix it.
        random_start: start from a random point: uniform in the cube for
            L-inf, uniform on the sphere for L2 (as the reference code does);
            otherwise from `x`.
        norm, clip_min, clip_max, targeted, seed, jit_compile: see `Attack`.

    Example:

    >>> attack = APGD(epsilon=8 / 255, loss="dlr")
    >>> x_adv = attack(model, x, y)   # doctest: +SKIP
    """

    # Only APGDTargeted, which chooses target classes itself, may use "dlr-targeted".
    _picks_targets = False

    def __init__(self, epsilon, *, num_steps=100, num_restarts=1, loss="ce", random_start=True,
                 **kwargs):
        super().__init__(epsilon, **kwargs)
        self.num_steps = validation.check_number("num_steps", num_steps, minimum=0, integer=True)
        self.num_restarts = validation.check_number(
            "num_restarts", num_restarts, minimum=1, integer=True
        )
        if not isinstance(random_start, bool):
            raise TypeError(
                f"Expected random_start to be a bool. Received: random_start={random_start!r}"
            )
        self.random_start = random_start
        self.loss = loss.lower() if isinstance(loss, str) else loss
        self._loss_fn = attack_losses.get(loss)
        if self.loss == "dlr-targeted" and not self._picks_targets:
            raise ValueError(
                "Expected loss='ce', 'dlr', 'cw', 'kl' or a callable; the targeted DLR loss "
                "needs target classes, which APGDTargeted ('apgd-t') picks. "
                f"Received: loss={loss!r}"
            )
        if self.targeted and self.loss == "kl":
            raise ValueError("Expected an untargeted attack for loss='kl'. Received: targeted=True")
        cut = checkpoints(self.num_steps)
        # Indexed by the number of steps done, 0..num_steps: whether to check
        # there, and how many steps the check looks back over.
        is_check = [False] * (self.num_steps + 1)
        period = [0.0] * (self.num_steps + 1)
        for previous, step in zip(cut[:-1], cut[1:]):
            is_check[step], period[step] = True, float(step - previous)
        self._is_check, self._period = is_check, period

    # -- the attack objective ------------------------------------------------------------
    def _objective(self, logits, y, target, clean_logits):
        # Only APGD-T passes targets, so plain `(logits, labels, clean_logits=None)`
        # callables (the PGD convention) work too.
        extra = {} if target is None else {"target": target}
        value = self._loss_fn(logits, y, clean_logits=clean_logits, **extra)
        # A targeted attack descends the loss on the target class in `y`.
        return -value if self.targeted else value

    def _fooled(self, logits, y):
        predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
        return tf.equal(predicted, y) if self.targeted else tf.not_equal(predicted, y)

    def _check_logits(self, logits):
        if self.loss == "dlr":
            _check_num_classes(logits, 3, "the DLR loss")

    # -- one run -------------------------------------------------------------------------
    def _start(self, x, seed):
        if not self.random_start or self.epsilon == 0:
            return x
        if self.norm == "linf":
            x_start = projections.random_start(x, self.epsilon, self.norm, seed)
        else:
            # The reference starts on the sphere: a normalised Gaussian direction.
            noise = tf.random.stateless_normal(tf.shape(x), seed, dtype=x.dtype)
            norms = _per_example(projections.norm_of(noise, "l2"), x)
            x_start = x + self.epsilon * noise / tf.maximum(norms, _TINY)
        return projections.clip_to_range(x_start, self.clip_min, self.clip_max)

    def _project(self, x_adv, x):
        x_adv = projections.project(x_adv, x, self.epsilon, self.norm)
        return projections.clip_to_range(x_adv, self.clip_min, self.clip_max)

    def _run_once(self, logits_fn, x, y, seed, target=None, clean_logits=None, skip=None):
        """One APGD run. Returns `(x_out, found, best_loss)`, see `merge_runs`.

        With `stop_when_fooled` (and not under XLA) an example leaves the batch
        at the step that fools it, and `skip` (B,) names examples an earlier run
        already fooled, which this one does not attack (they come back with
        `found` False and loss -inf, so `merge_runs` keeps the earlier run).
        """
        # Longer than most functions here, on purpose: the `tf.while_loop` body closes over
        # `evaluate` and the checkpoint schedule, and follows Algorithm 1 of Croce and
        # Hein (2020) step by step; split up, its loop variables would cross function
        # boundaries for nothing.
        compact = self._compacting()

        def evaluate(x_adv, x, y, target, clean_logits):
            with tf.GradientTape() as tape:
                tape.watch(x_adv)
                logits = logits_fn(x_adv)
                self._check_logits(logits)  # at trace time, before the loss needs k classes
                loss = self._objective(logits, y, target, clean_logits)  # (B,)
                total = tf.reduce_sum(loss)
            grad = tape.gradient(total, x_adv, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return loss, grad, self._fooled(logits, y)

        batch = tf.shape(x)[0]
        # What each example's attack reads: the clean point, its label, the optional target
        # and clean logits (empty stand-ins keep the loop's structure fixed) and its index.
        has_target, has_clean = target is not None, clean_logits is not None
        inputs = (x, y, target if has_target else tf.zeros([batch], tf.int32),
                  clean_logits if has_clean else tf.zeros([batch, 0]), tf.range(batch))
        # The start is drawn for the whole batch, so each example's is the same either way.
        x_adv = self._start(x, seed)
        if compact and skip is not None:
            inputs, x_adv = compaction.gather((inputs, x_adv), tf.where(tf.logical_not(skip))[:, 0])

        def unpack(inputs):
            x, y, target, clean_logits, _ = inputs
            return (x, y, target if has_target else None, clean_logits if has_clean else None)

        size = tf.shape(x_adv)[0]
        if compact:  # every example skipped: no pass (oneDNN convolutions refuse empty batches)
            loss, grad, fooled = tf.cond(
                size > 0, lambda: evaluate(x_adv, *unpack(inputs)),
                lambda: (tf.zeros([0]), tf.zeros_like(x_adv), tf.zeros([0], tf.bool)))
        else:
            loss, grad, fooled = evaluate(x_adv, *unpack(inputs))
        is_check = tf.constant(self._is_check)
        period = tf.constant(self._period, tf.float32)
        # The run's results over the whole batch, filled in as examples leave it (compact).
        outputs = (x, tf.zeros([batch], tf.bool), tf.fill([batch], float("-inf")))

        def step(i, inputs, x_adv, x_prev, grad, loss_prev, x_best, grad_best, loss_best,
                 x_fool, found, eta, increases, loss_best_at_check, halved_at_check, outputs):
            x, y, target, clean_logits = unpack(inputs)
            # The first step has no previous move to follow.
            momentum = tf.where(i > 0, _MOMENTUM, 1.0)
            z = self._project(
                x_adv + projections.steepest_ascent_step(grad, _per_example(eta, x), self.norm), x
            )
            x_next = self._project(
                x_adv + momentum * (z - x_adv) + (1.0 - momentum) * (x_adv - x_prev), x
            )
            loss, grad_next, fooled = evaluate(x_next, x, y, target, clean_logits)
            x_fool = tf.where(_per_example(fooled, x), x_next, x_fool)
            found = tf.logical_or(found, fooled)
            increases += tf.cast(loss > loss_prev, tf.float32)
            improved = loss > loss_best
            x_best = tf.where(_per_example(improved, x), x_next, x_best)
            grad_best = tf.where(_per_example(improved, x), grad_next, grad_best)
            loss_best = tf.where(improved, loss, loss_best)

            # Checkpoint. Whether this step is one is a scalar, but the decision
            # to halve is per example, so both are masks rather than a tf.cond.
            check = tf.gather(is_check, i + 1)
            oscillating = increases <= _RHO * tf.gather(period, i + 1)
            stalled = tf.logical_and(tf.logical_not(halved_at_check),
                                     loss_best_at_check >= loss_best)
            halve = tf.logical_and(check, tf.logical_or(oscillating, stalled))
            eta = tf.where(halve, 0.5 * eta, eta)
            x_new = tf.where(_per_example(halve, x), x_best, x_next)
            grad_next = tf.where(_per_example(halve, x), grad_best, grad_next)
            halved_at_check = tf.where(check, halve, halved_at_check)
            loss_best_at_check = tf.where(check, loss_best, loss_best_at_check)
            increases = tf.where(check, tf.zeros_like(increases), increases)
            state = (inputs, x_new, x_adv, grad_next, loss, x_best, grad_best, loss_best, x_fool,
                     found, eta, increases, loss_best_at_check, halved_at_check)
            if compact:
                state, outputs = _drop_fooled(state, outputs)
            return (i + 1, *state, outputs)

        state = (
            inputs, x_adv, x_adv, grad, loss, x_adv, grad, loss, x_adv, fooled,
            tf.fill([size], tf.constant(2.0 * self.epsilon, tf.float32)),
            tf.zeros([size], tf.float32), loss,
            # No halving at the first checkpoint just because nothing happened before it.
            tf.ones([size], tf.bool),
        )
        if compact:
            state, outputs = _drop_fooled(state, outputs)
        state = (tf.constant(0), *state, outputs)
        if compact:
            # Every per-example tensor may shrink; the step counter and the outputs keep shape.
            invariants = tf.nest.map_structure(compaction.free_batch, state)
            invariants = (tf.TensorShape([]), *invariants[1:-1],
                          tf.nest.map_structure(lambda t: t.shape, outputs))
            state = tf.while_loop(
                lambda i, inputs, *_: tf.logical_and(i < self.num_steps, tf.size(inputs[1]) > 0),
                step, state, shape_invariants=invariants, maximum_iterations=self.num_steps)
        else:
            state = tf.while_loop(lambda i, *_: i < self.num_steps, step, state,
                                  maximum_iterations=self.num_steps)
        inputs, x_best, loss_best, x_fool, found = state[1], state[6], state[8], state[9], state[10]
        if not compact:
            x_out = tf.where(_per_example(found, x_best), x_fool, x_best)
            return tf.stop_gradient(x_out), found, tf.stop_gradient(loss_best)
        # The examples still in the batch were never fooled: their best-loss points.
        x_all, found_all, loss_all = compaction.scatter(state[-1], inputs[-1],
                                                        (x_best, found, loss_best))
        return tf.stop_gradient(x_all), found_all, tf.stop_gradient(loss_all)

    def perturb(self, model, x, y, seed=None):
        logits_fn, x, y, seed = self._prepare(model, x, y, seed)
        clean_logits = tf.stop_gradient(logits_fn(x)) if self.loss == "kl" else None
        seeds = tf.random.experimental.stateless_split(seed, self.num_restarts)
        best = self._run_once(logits_fn, x, y, seeds[0], clean_logits=clean_logits)
        for r in range(1, self.num_restarts):
            best = merge_runs(best, self._run_once(logits_fn, x, y, seeds[r],
                                                   clean_logits=clean_logits, skip=best[1]))
        return best[0]

    def get_config(self):
        config = super().get_config()
        config.update(
            num_steps=self.num_steps,
            num_restarts=self.num_restarts,
            loss=self._serialisable_loss(),
            random_start=self.random_start,
        )
        return config


class _FixedLossAPGD(APGD):
    """APGD with the loss fixed by the registered name (`apgd-ce`, `apgd-dlr`)."""

    fixed_loss = None

    def __init__(self, epsilon, **kwargs):
        if "loss" in kwargs:
            raise ValueError(
                f"Expected no loss argument: '{self.registry_name}' uses "
                f"loss='{self.fixed_loss}'; use APGD(loss=...) for another. "
                f"Received: loss={kwargs['loss']!r}"
            )
        super().__init__(epsilon, loss=self.fixed_loss, **kwargs)

    def get_config(self):
        config = super().get_config()
        del config["loss"]
        return config


@register("apgd-ce")
class APGDCE(_FixedLossAPGD):
    """APGD with the cross-entropy loss, the first attack of AutoAttack."""

    fixed_loss = "ce"


@register("apgd-dlr")
class APGDDLR(_FixedLossAPGD):
    """APGD with the DLR loss, invariant to shifting and scaling the logits."""

    fixed_loss = "dlr"
