"""The Square attack (Andriushchenko et al. 2020): score-based random search.

Andriushchenko, Croce, Flammarion, Hein, "Square Attack: a query-efficient
black-box adversarial attack via random search", ECCV 2020. It is the
black-box member of AutoAttack (Croce & Hein 2020), run there with 5000
queries and the margin loss.

The attack only calls the model forward: it never asks for a gradient, so it
is unaffected by gradient masking. The whole search is one `tf.while_loop`
with stateless random ops, so it traces under `tf.function(jit_compile=True)`.
Windows of varying side are built as masks from iotas, keeping shapes static.

Differences from the AutoAttack reference implementation, all deliberate:

- `num_queries` counts every forward pass per example and restart, the
  initial one included (the reference makes `n_queries` passes after it).
- Window corners are uniform over every position where the window fits;
  the reference draws them from `[0, h - s)`, so the last row and column are
  never searched after the initialisation.
- Corners, channel signs and the L2 pattern's orientation are drawn per
  example (the reference shares one draw across the batch, the authors'
  original code draws per example).
- L-inf: as in the authors' original code, the channel signs are redrawn
  (up to 16 times, in parallel) when they would leave the window unchanged,
  so queries are not wasted on proposals equal to the current point.
- L2: the window update uses the paper's meta-pseudo-gaussian pattern (two
  opposite bumps), as the original code does; the initialisation is the
  reference's grid of such blocks, each block's orientation drawn per example.
- The side is clamped to the image (`<= min(height, width)`), and the
  schedule's rescaled iteration is computed in exact integer arithmetic.
- An example counts as broken only when another class strictly beats its
  label (the reference also stops on ties, which `argmax` may resolve to the label).
- Every example keeps the best point it found (the reference returns the
  clean input for examples it could not break).
"""

import numpy as np
import tensorflow as tf

from tfrobust.attacks import losses as attack_losses
from tfrobust.attacks.base import Attack, register
from tfrobust.utils import validation

# Iterations (on a 10000-query scale) after which the window fraction p halves.
P_THRESHOLDS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
_LOSSES = {"cw": attack_losses.cw_margin, "ce": attack_losses.cross_entropy}
# Files saved before the losses had one vocabulary call the margin loss "margin".
_RENAMED_LOSSES = {"margin": "cw"}
_SIGN_DRAWS = 16
_TINY = 1e-12


def p_selection(iteration, p_init, num_queries):
    """The fraction of pixels a window covers at `iteration` (0-based), float64.

    The iteration is rescaled to a 10000-query run, `it = iteration * 10000 //
    num_queries`; p starts at `p_init` and halves each time `it` passes one of
    `P_THRESHOLDS`:

    ```
    p(it) = p_init / 2^#{t in (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000) : it > t}
    ```
    """
    it = tf.cast(iteration, tf.int64) * 10000 // num_queries
    halvings = tf.add_n([tf.cast(it > t, tf.float64) for t in P_THRESHOLDS])
    return p_init * tf.pow(tf.constant(0.5, tf.float64), halvings)


def _square_side(p, height, width, norm):
    """Window side `round(sqrt(p * height * width))`, >= 1 (L-inf) or odd >= 3 (L2)."""
    side = tf.cast(tf.round(tf.sqrt(p * float(height * width))), tf.int32)
    if norm == "linf":
        side = tf.maximum(side, 1)
    else:
        side = tf.maximum(side, 3)
        side = side + tf.cast(tf.equal(side % 2, 0), tf.int32)
    return tf.minimum(side, min(height, width))


def _corners(seed, batch, size, side):
    """One uniform corner per example in [0, size - side], (B,) int32."""
    u = tf.random.stateless_uniform([batch], seed, dtype=tf.float32)
    positions = tf.cast(tf.floor(u * tf.cast(size - side + 1, tf.float32)), tf.int32)
    return tf.minimum(positions, size - side)


def _inverse_square_sums(size):
    """table[n] = sum_{m=1}^{n} 1 / m^2, float32 of length size + 2."""
    return tf.constant(np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, size + 2) ** 2)]),
                       tf.float32)


def _bump(i, j, rows, cols, table):
    """The pseudo-gaussian bump of a rows x cols rectangle at local coordinates (i, j).

    The reference builds it by adding 1/(k+1)^2 on concentric rectangles of
    half-width k around (rows // 2, cols // 2); a cell at Chebyshev distance
    d from the centre therefore holds sum_{n=d+1}^{K} 1/n^2, K = max(rows // 2, cols // 2) + 1.
    Unnormalised; zero when (i, j) is far outside.
    """
    ci, cj = rows // 2, cols // 2
    k = tf.maximum(ci, cj) + 1
    d = tf.minimum(tf.maximum(tf.abs(i - ci), tf.abs(j - cj)), k)
    return tf.gather(table, k) - tf.gather(table, d)


def _eta_parts(i, j, side, table):
    """The two halves of the meta-pseudo-gaussian pattern of a side x side square.

    Rows above `side // 2` hold a bump of that height, the rows below a bump
    of the remaining height; the pattern is top / |top| - bottom / |bottom|,
    normalised. Returns the unnormalised (top, bottom) values at (i, j).
    """
    half = side // 2
    top = i < half
    rows = tf.where(top, half, side - half)
    value = _bump(tf.where(top, i, i - half), j, rows, side, table)
    zero = tf.zeros_like(value)
    return tf.where(top, value, zero), tf.where(top, zero, value)


def _combine(top, bottom, top_norm, bottom_norm):
    eta = top / tf.maximum(top_norm, _TINY) - bottom / tf.maximum(bottom_norm, _TINY)
    count = tf.cast(top_norm > 0, tf.float32) + tf.cast(bottom_norm > 0, tf.float32)
    return eta / tf.sqrt(tf.maximum(count, 1.0))


def _l2_norm(v, axis):
    return tf.sqrt(tf.reduce_sum(tf.square(v), axis=axis, keepdims=True))


@register("square")
class Square(Attack):
    """Square attack: random search over square windows, forward passes only.

    Andriushchenko, Croce, Flammarion, Hein, "Square Attack: a query-efficient
    black-box adversarial attack via random search", ECCV 2020.

    Each iteration changes one random square window of side
    `s = round(sqrt(p * H * W))`, where `p` follows `p_selection`, and keeps
    the change for the examples whose loss improves (or which become
    misclassified). Broken examples are frozen and are not sent to the model
    again (each step queries only the examples still unbroken), and the search
    ends early once every example is broken.

    - L-inf: starts from vertical stripes of +-epsilon (one sign per column and
      channel); a window is set to +-epsilon, one random sign per channel.
    - L2: starts from a grid of +-meta-pseudo-gaussian blocks scaled to norm
      epsilon; a window receives a new pattern while a second window gives up
      its perturbation's mass, keeping `||delta||_2 = epsilon` before clipping.

    The loss is the margin `max_{i != y} z_i - z_y` (AutoAttack's choice) or
    cross-entropy, maximised; a targeted attack maximises `z_t - max_{i != t} z_i`.

    Args:
        epsilon: radius of the threat model.
        norm: `"linf"` or `"l2"`.
        num_queries: forward passes per example and restart, the first included (>= 1).
        p_init: initial fraction of pixels a window covers, in (0, 1].
        num_restarts: independent searches (>= 1); later ones only spend
            queries on the examples earlier ones did not break.
        loss: `"cw"` (the margin loss, as every attack calls it) or `"ce"`.
        clip_min, clip_max, targeted, seed, jit_compile: see `Attack`.

    Example:

    >>> attack = Square(epsilon=0.3, num_queries=5000)
    >>> x_adv = attack(model, x, y)   # doctest: +SKIP
    >>> x_adv, queries = attack.perturb_and_count(model, x, y)   # doctest: +SKIP
    """

    gradient_free = True
    cost_in_name = True

    def __init__(self, epsilon, *, norm="linf", num_queries=5000, p_init=0.8, num_restarts=1,
                 loss="cw", **kwargs):
        super().__init__(epsilon, norm=norm, **kwargs)
        self.num_queries = validation.check_number(
            "num_queries", num_queries, minimum=1, integer=True
        )
        self.p_init = validation.check_number(
            "p_init", p_init, minimum=0.0, maximum=1.0, strict_minimum=True
        )
        self.num_restarts = validation.check_number(
            "num_restarts", num_restarts, minimum=1, integer=True
        )
        self.loss = validation.check_choice("loss", loss, _LOSSES)
        self._loss_fn = _LOSSES[self.loss]

    @property
    def cost(self):
        """Queries per example and restart (`num_queries`)."""
        return self.num_queries

    # -- scores --------------------------------------------------------------------------
    def _objective(self, logits, y):
        value = self._loss_fn(logits, y)
        return -value if self.targeted else value

    def _success(self, logits, y):
        margin = attack_losses.cw_margin(logits, y)  # > 0: misclassified
        return margin < 0 if self.targeted else margin > 0

    # -- initialisation ------------------------------------------------------------------
    def _init_linf(self, x, seed):
        shape = tf.stack([tf.shape(x)[0], 1, x.shape[2], x.shape[3]])
        signs = tf.where(tf.random.stateless_uniform(shape, seed) < 0.5, -1.0, 1.0)  # (B, 1, W, C)
        return self._clip(x + self.epsilon * signs)

    def _init_l2(self, x, seed):
        batch = tf.shape(x)[0]
        height, width, channels = x.shape[1:]
        # A 5 x 5 grid of side x side blocks, centred on the rows (as in the reference).
        side = max(height // 5, 1)
        start = max((height - 5 * side) // 2, 0)
        table = _inverse_square_sums(max(height, width))
        # The per-block normalisation, from one block.
        grid = tf.range(side)
        top, bottom = _eta_parts(grid[:, None], grid[None, :], side, table)
        top_norm, bottom_norm = tf.norm(top), tf.norm(bottom)

        def blocks(size):
            offset = np.arange(size) - start
            index = np.clip(offset // side, 0, None)
            valid = (offset >= 0) & (index < size // side) & (start + (index + 1) * side <= size)
            return np.minimum(index, max(size // side - 1, 0)), offset - index * side, valid

        bi, li, valid_i = blocks(height)
        bj, lj, valid_j = blocks(width)
        num_bi, num_bj = max(height // side, 1), max(width // side, 1)
        seeds = tf.random.experimental.stateless_split(seed, 2)
        draws = tf.random.stateless_uniform([batch, num_bi, num_bj, channels + 1], seeds[0])
        draws = tf.gather(tf.gather(draws, bi, axis=1), bj, axis=2)  # (B, H, W, C + 1)
        flip = draws[..., :1] < 0.5  # transpose this example's block
        signs = tf.where(draws[..., 1:] < 0.5, -1.0, 1.0)
        li, lj = tf.constant(li[:, None, None], tf.int32), tf.constant(lj[None, :, None], tf.int32)
        top, bottom = _eta_parts(tf.where(flip, lj, li), tf.where(flip, li, lj), side, table)
        eta = _combine(top, bottom, top_norm, bottom_norm)
        valid = tf.constant((valid_i[:, None] & valid_j[None, :])[:, :, None], tf.float32)
        delta = eta * signs * valid
        return self._clip(x + self.epsilon * delta / tf.maximum(_l2_norm(delta, [1, 2, 3]), _TINY))

    # -- one proposal per iteration ------------------------------------------------------
    def _window(self, seed, x, side):
        """A (B, H, W, 1) mask of one random side x side window per example, and the
        coordinates of every pixel relative to the window's corner (row, column)."""
        seeds = tf.random.experimental.stateless_split(seed, 2)
        top = _corners(seeds[0], tf.shape(x)[0], x.shape[1], side)[:, None, None, None]
        left = _corners(seeds[1], tf.shape(x)[0], x.shape[2], side)[:, None, None, None]
        rows = tf.range(x.shape[1])[None, :, None, None]
        cols = tf.range(x.shape[2])[None, None, :, None]
        inside = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
        return inside, rows - top, cols - left

    def _propose_linf(self, seed, x, x_best, side, corners):
        seeds = tf.random.experimental.stateless_split(seed, 2)
        mask, _, _ = self._window(seeds[0], x, side)
        upper, lower = corners
        # Which sign of each channel would change the window at all.
        changes_up = tf.reduce_any(mask & (tf.abs(upper - x_best) > 1e-7), axis=[1, 2])  # (B, C)
        changes_down = tf.reduce_any(mask & (tf.abs(lower - x_best) > 1e-7), axis=[1, 2])
        draws = tf.random.stateless_uniform(
            tf.stack([tf.shape(x)[0], _SIGN_DRAWS, x.shape[3]]), seeds[1]) < 0.5  # (B, K, C)
        useful = tf.reduce_any(
            tf.where(draws, changes_up[:, None], changes_down[:, None]), axis=-1)  # (B, K)
        first = tf.argmax(tf.cast(useful, tf.int32), axis=1, output_type=tf.int32)
        up = tf.gather(draws, first, batch_dims=1)[:, None, None, :]  # (B, 1, 1, C)
        return tf.where(mask, tf.where(up, upper, lower), x_best)

    def _propose_l2(self, seed, x, x_best, side, table):
        seeds = tf.random.experimental.stateless_split(seed, 4)
        mask, i, j = self._window(seeds[0], x, side)
        other, _, _ = self._window(seeds[1], x, side)
        mask, other = tf.cast(mask, tf.float32), tf.cast(other, tf.float32)
        delta = x_best - x
        norm_image = _l2_norm(delta, [1, 2, 3])  # (B, 1, 1, 1)
        norm_window = _l2_norm(delta * mask, [1, 2])  # (B, 1, 1, C)
        norm_windows = _l2_norm(delta * tf.maximum(mask, other), [1, 2])
        batch_shape = tf.stack([tf.shape(x)[0], 1, 1, 1])
        flip = tf.random.stateless_uniform(batch_shape, seeds[2]) < 0.5  # transpose the pattern
        top, bottom = _eta_parts(tf.where(flip, j, i), tf.where(flip, i, j), side, table)
        top, bottom = top * mask, bottom * mask
        eta = _combine(top, bottom, _l2_norm(top, [1, 2]), _l2_norm(bottom, [1, 2]))
        signs = tf.where(tf.random.stateless_uniform(
            tf.stack([tf.shape(x)[0], 1, 1, x.shape[3]]), seeds[3]) < 0.5, -1.0, 1.0)
        # New window: the pattern plus the old window's direction, with the
        # mass of both windows and whatever the budget has left (per channel).
        new = eta * signs + delta * mask / (norm_window + _TINY)
        scale = tf.sqrt(tf.maximum(self.epsilon ** 2 - tf.square(norm_image), 0.0) / x.shape[3]
                        + tf.square(norm_windows))
        new = new / tf.maximum(_l2_norm(new, [1, 2]), _TINY) * scale
        delta = delta * (1.0 - tf.maximum(mask, other)) + new * mask
        delta = self.epsilon * delta / tf.maximum(_l2_norm(delta, [1, 2, 3]), _TINY)
        return self._clip(x + delta)

    def _clip(self, x):
        return tf.clip_by_value(x, self.clip_min, self.clip_max)

    # -- the search ----------------------------------------------------------------------
    def _run_once(self, logits_fn, x, y, seed, done):
        """One search from a fresh start; `done` (B,) marks examples not to attack.

        Returns the best point, its objective, whether it succeeded, and the
        queries spent per example.
        """
        height, width = x.shape[1], x.shape[2]
        seeds = tf.random.experimental.stateless_split(seed, 2)
        if self.norm == "linf":
            x_best = self._init_linf(x, seeds[0])
            corners = (self._clip(x + self.epsilon), self._clip(x - self.epsilon))
        else:
            x_best = self._init_l2(x, seeds[0])
            table = _inverse_square_sums(max(height, width))
        best, success = self._query(logits_fn, x_best, y, ~done)
        queries = tf.cast(~done, tf.int32)
        done = done | success

        def body(i, x_best, best, success, done, queries):
            side = _square_side(p_selection(i, self.p_init, self.num_queries), height, width,
                                self.norm)
            key = tf.random.experimental.stateless_fold_in(seeds[1], i)
            if self.norm == "linf":
                x_new = self._propose_linf(key, x, x_best, side, corners)
            else:
                x_new = self._propose_l2(key, x, x_best, side, table)
            active = ~done
            value, fooled = self._query(logits_fn, x_new, y, active)
            accept = active & ((value > best) | fooled)
            x_best = tf.where(accept[:, None, None, None], x_new, x_best)
            best = tf.where(accept, value, best)
            success = success | (active & fooled)
            return (i + 1, x_best, best, success, done | fooled,
                    queries + tf.cast(active, tf.int32))

        steps = self.num_queries - 1
        _, x_best, best, success, _, queries = tf.while_loop(
            lambda i, *state: (i < steps) & tf.logical_not(tf.reduce_all(state[3])),
            body, (tf.constant(0), x_best, best, success, done, queries),
            maximum_iterations=steps,
        )
        return x_best, best, success, queries

    def _query(self, logits_fn, x_new, y, active):
        """The objective and success of the `active` examples' proposals, (B,) each.

        Only the active examples are sent to the model (the reference queries
        only the examples it has not broken yet); the others get a value no
        proposal is accepted on.
        """
        index = tf.where(active)[:, 0]
        logits = logits_fn(tf.gather(x_new, index))
        labels = tf.gather(y, index)
        at = index[:, None]
        values = self._objective(logits, labels)
        value = tf.tensor_scatter_nd_update(
            tf.fill(tf.shape(y), tf.constant(-np.inf, values.dtype)), at, values)
        fooled = tf.tensor_scatter_nd_update(tf.zeros(tf.shape(y), tf.bool), at,
                                             self._success(logits, labels))
        return value, fooled

    def perturb_and_count(self, model, x, y, seed=None):
        """`perturb`, also returning the forward passes spent on each example, (B,) int32."""
        logits_fn, x, y, seed = self._prepare(model, x, y, seed)
        seeds = tf.random.experimental.stateless_split(seed, self.num_restarts)
        done = tf.zeros(tf.shape(y), tf.bool)
        best_x, best, success, queries = self._run_once(logits_fn, x, y, seeds[0], done)
        for r in range(1, self.num_restarts):
            x_r, value, success_r, queries_r = self._run_once(logits_fn, x, y, seeds[r], success)
            better = ~success & (success_r | (value > best))
            best_x = tf.where(better[:, None, None, None], x_r, best_x)
            best = tf.where(better, value, best)
            success = success | success_r
            queries = queries + queries_r
        return tf.stop_gradient(best_x), queries

    def perturb(self, model, x, y, seed=None):
        return self.perturb_and_count(model, x, y, seed)[0]

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("loss"), str):
            config["loss"] = _RENAMED_LOSSES.get(config["loss"], config["loss"])
        return cls(**config)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_queries=self.num_queries,
            p_init=self.p_init,
            num_restarts=self.num_restarts,
            loss=self.loss,
        )
        return config
