"""Projected gradient descent (Madry et al. 2018)."""

import tensorflow as tf

from tfrobust.attacks import compaction
from tfrobust.attacks import losses as attack_losses
from tfrobust.attacks import projections
from tfrobust.attacks.base import Attack, register
from tfrobust.utils import validation
from tfrobust.utils.device import default_unroll_steps


# `_score` ranks a successful restart above any unsuccessful one by this much.
_SUCCESS_BONUS = 1e6


@register("pgd")
class PGD(Attack):
    """Projected gradient descent with random start and restarts.

    Madry, Makelov, Schmidt, Tsipras, Vladu, "Towards Deep Learning Models
    Resistant to Adversarial Attacks", ICLR 2018.

    Each step moves along the steepest-ascent direction of the loss for the
    norm (the gradient's sign for L-inf, its normalised direction for L2),
    then projects back onto the epsilon-ball and the valid range:

    ```
    x_{t+1} = clip_[min,max]( Proj_{B(x, eps)}( x_t + step_size * dir(grad L(f(x_t), y)) ) )
    ```

    With `num_restarts > 1`, each example keeps the restart that misclassifies
    it, or failing that the one with the highest loss.

    With `stop_when_fooled` (see `Attack`; `tfrobust.evaluate` sets it) an
    example leaves the batch with the first iterate that misclassifies it, and
    a restart attacks only the examples no earlier run fooled.

    Args:
        epsilon: radius of the threat model.
        num_steps: gradient steps per restart (>= 0; 0 returns the start point).
        step_size: step length; `None` means `2.5 * epsilon / num_steps`.
        num_restarts: independent runs per example (>= 1).
        random_start: `True`/`"uniform"`: a uniform point in the ball;
            `"normal"`: `x + init_std * N(0, 1)` (the TRADES start); `False`: x.
        init_std: standard deviation of the `"normal"` start.
        loss: attack loss name (`"ce"`, `"cw"`, `"dlr"`, `"kl"`) or callable.
        norm, clip_min, clip_max, targeted, seed, jit_compile: see `Attack`.

    Example:

    >>> attack = PGD(epsilon=0.3, step_size=0.01, num_steps=40)
    >>> x_adv = attack(model, x, y)   # doctest: +SKIP
    """

    cost_in_name = True

    def __init__(self, epsilon, *, num_steps=10, step_size=None, num_restarts=1,
                 random_start=True, loss="ce", init_std=0.001, **kwargs):
        super().__init__(epsilon, **kwargs)
        self.num_steps = validation.check_number("num_steps", num_steps, minimum=0, integer=True)
        if step_size is None:
            step_size = 2.5 * self.epsilon / max(self.num_steps, 1)
        self.step_size = validation.check_number("step_size", step_size, minimum=0.0)
        self.num_restarts = validation.check_number(
            "num_restarts", num_restarts, minimum=1, integer=True
        )
        if random_start not in (True, False, "uniform", "normal"):
            raise ValueError(
                "Expected random_start to be True, False, 'uniform' or 'normal'. "
                f"Received: random_start={random_start!r}"
            )
        self.random_start = "uniform" if random_start is True else random_start
        self.init_std = validation.check_number("init_std", init_std, minimum=0.0)
        self.loss = loss if callable(loss) else loss.lower() if isinstance(loss, str) else loss
        self._loss_fn = attack_losses.get(loss)
        if self.targeted and self.loss == "kl":
            raise ValueError("Expected an untargeted attack for loss='kl'. Received: targeted=True")
        # Loops of up to this many steps are written out in the graph; None: the measured
        # per-device default (`tfrobust.utils.device.default_unroll_steps`). Not part of the
        # config: it changes speed, not results.
        self.unroll_up_to = None

    def _objective(self, logits, y, clean_logits):
        value = self._loss_fn(logits, y, clean_logits=clean_logits)
        # A targeted attack descends the loss on the target class.
        return -value if self.targeted else value

    def _run_once(self, logits_fn, x, y, clean_logits, seed, skip=None):
        if self.random_start == "uniform" and self.epsilon > 0:
            x_adv = projections.random_start(x, self.epsilon, self.norm, seed)
        elif self.random_start == "normal":
            # TRADES' start: x + init_std * N(0, 1), then into the ball.
            noise = tf.random.stateless_normal(tf.shape(x), seed, stddev=self.init_std)
            x_adv = projections.project(x + noise, x, self.epsilon, self.norm)
        else:
            x_adv = x
        x_adv = projections.clip_to_range(x_adv, self.clip_min, self.clip_max)

        if self._compacting():
            return self._run_compacted(logits_fn, x, x_adv, y, clean_logits, skip)

        def step(i, x_adv):
            with tf.GradientTape() as tape:
                tape.watch(x_adv)
                loss = tf.reduce_sum(self._objective(logits_fn(x_adv), y, clean_logits))
            grad = tape.gradient(loss, x_adv, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return i + 1, self._move(x_adv, grad, x)

        return tf.stop_gradient(self._loop(step, (tf.constant(0), x_adv))[1])

    def _move(self, x_adv, grad, x):
        """One step along `grad`, back into the ball around `x` and the pixel range."""
        x_adv = x_adv + projections.steepest_ascent_step(grad, self.step_size, self.norm)
        x_adv = projections.project(x_adv, x, self.epsilon, self.norm)
        return projections.clip_to_range(x_adv, self.clip_min, self.clip_max)

    def _loop(self, step, state, cond=None, shape_invariants=None):
        """`num_steps` of `step` on `state` (whose first entry counts them), written out
        as straight-line graph up to `unroll_up_to` steps (faster than a loop on CPU in
        training), else a `tf.while_loop`. With `cond` (stopping when fooled, in
        evaluations) always a loop, which stops once `cond` is False: written out, each
        step needs a `tf.cond`, and a first call of PGD-20 with 5 restarts took 54.9 s;
        now 3.9 s (`python -m benchmarks.evaluation first-calls`)."""
        limit = default_unroll_steps() if self.unroll_up_to is None else self.unroll_up_to
        if self.num_steps <= limit and cond is None:
            for _ in range(self.num_steps):
                state = step(*state)
            return state

        def go_on(i, *rest):
            more = i < self.num_steps
            return more if cond is None else tf.logical_and(more, cond(*rest))
        return tf.while_loop(go_on, step, state, shape_invariants=shape_invariants,
                             maximum_iterations=self.num_steps)

    def _run_compacted(self, logits_fn, x, x_adv, y, clean_logits, skip=None):
        """The run of `_run_once` with `stop_when_fooled`: an example leaves the batch
        with the first iterate that fools the model (found by the forward pass of the
        next step, whose gradient it then skips); the rest end where PGD ends them.
        Examples in `skip` (B,) are not attacked (they come back at their start)."""
        batch = tf.shape(x)[0]
        has_clean = clean_logits is not None
        inputs = (x, y, clean_logits if has_clean else tf.zeros([batch, 0]), tf.range(batch))
        x_start = x_adv
        if skip is not None:
            inputs, x_adv = compaction.gather((inputs, x_adv), tf.where(tf.logical_not(skip))[:, 0])

        def step(i, inputs, x_adv, x_out):
            x_in, y_in, clean_in, index = inputs
            with tf.GradientTape() as tape:
                tape.watch(x_adv)
                logits = logits_fn(x_adv)
                loss = tf.reduce_sum(self._objective(logits, y_in, clean_in if has_clean else None))
            grad = tape.gradient(loss, x_adv, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            fooled = self._success(logits, y_in)
            gone = tf.where(fooled)[:, 0]
            (x_out,) = compaction.scatter((x_out,), tf.gather(index, gone),
                                          (tf.gather(x_adv, gone),))
            inputs, x_adv, grad = compaction.gather((inputs, x_adv, grad),
                                                    tf.where(tf.logical_not(fooled))[:, 0])
            return i + 1, inputs, self._move(x_adv, grad, inputs[0]), x_out

        state = (tf.constant(0), inputs, x_adv, x_start)
        _, inputs, x_adv, x_out = self._loop(
            step, state, cond=lambda inputs, *_: tf.size(inputs[1]) > 0,
            shape_invariants=(tf.TensorShape([]), tuple(map(compaction.free_batch, inputs)),
                              compaction.free_batch(x), x.shape))
        (x_out,) = compaction.scatter((x_out,), inputs[-1], (x_adv,))
        return tf.stop_gradient(x_out)

    def perturb(self, model, x, y, seed=None):
        logits_fn, x, y, seed = self._prepare(model, x, y, seed)
        clean_logits = tf.stop_gradient(logits_fn(x)) if self.loss == "kl" else None
        seeds = tf.random.experimental.stateless_split(seed, self.num_restarts)
        best = self._run_once(logits_fn, x, y, clean_logits, seeds[0])
        if self.num_restarts == 1:
            return best
        best_score = self._score(logits_fn(best), y, clean_logits)
        for r in range(1, self.num_restarts):
            # Stopping when fooled, a restart attacks only the examples no run has fooled.
            skip = best_score >= _SUCCESS_BONUS if self._compacting() else None
            candidate = self._run_once(logits_fn, x, y, clean_logits, seeds[r], skip)
            score = self._score(logits_fn(candidate), y, clean_logits)
            better = score > best_score
            if skip is not None:
                better = tf.logical_and(better, tf.logical_not(skip))
            mask = tf.reshape(better, [-1] + [1] * (x.shape.rank - 1))
            best = tf.where(mask, candidate, best)
            best_score = tf.where(better, score, best_score)
        return best

    def _success(self, logits, y):
        """Per example: misclassified (untargeted) or classified as the target (targeted)."""
        predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
        return tf.equal(predicted, y) if self.targeted else tf.not_equal(predicted, y)

    def _score(self, logits, y, clean_logits):
        """Success first (a large bonus), then the attack objective."""
        objective = self._objective(logits, y, clean_logits)
        return tf.where(self._success(logits, y), _SUCCESS_BONUS + objective, objective)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_steps=self.num_steps,
            step_size=self.step_size,
            num_restarts=self.num_restarts,
            random_start=self.random_start,
            loss=self._serialisable_loss(),
            init_std=self.init_std,
        )
        return config
