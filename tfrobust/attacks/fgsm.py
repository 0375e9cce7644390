"""The fast gradient sign method and its random-start variant (FGSM-RS)."""

from tfrobust.attacks.base import register
from tfrobust.attacks.pgd import PGD
from tfrobust.utils import validation


@register("fgsm")
class FGSM(PGD):
    """One steepest-ascent step: the fast gradient sign method.

    Goodfellow, Shlens, Szegedy, "Explaining and Harnessing Adversarial
    Examples", ICLR 2015; with a random start, Wong, Rice, Kolter, "Fast is
    better than free: Revisiting adversarial training", ICLR 2020.

    ```
    x' = clip_[min,max]( Proj_{B(x, eps)}( x_0 + step_size * dir(grad L(f(x_0), y)) ) )
    ```

    where `dir` is the gradient's sign for L-inf and its normalised direction
    for L2, and `x_0` is `x`, or with `random_start` a uniform point in the
    ball (clipped to the valid range). This is PGD with a single step, so it
    shares PGD's losses, projection and targeted mode.

    Args:
        epsilon: radius of the threat model.
        norm: `"linf"` or `"l2"`.
        random_start: start from a uniform point in the ball.
        step_size: step length; `None` means `epsilon`, or `1.25 * epsilon`
            with a random start (the FastAT setting of Wong et al.).
        loss: attack loss name (`"ce"`, `"cw"`, `"dlr"`, `"kl"`) or callable.
        clip_min, clip_max, targeted, seed, jit_compile: see `Attack`.

    Example:

    >>> x_adv = FGSM(epsilon=0.3)(model, x, y)   # doctest: +SKIP
    """

    cost_in_name = False  # always one step: `fgsm`, not `fgsm-1`

    def __init__(self, epsilon, *, norm="linf", random_start=False, step_size=None, loss="ce",
                 **kwargs):
        for name in ("num_steps", "num_restarts"):
            if name in kwargs:
                raise ValueError(
                    f"Expected no {name} argument: FGSM takes one step from one start; "
                    f"use PGD for more. Received: {name}={kwargs[name]!r}"
                )
        if step_size is None:
            epsilon = validation.check_number("epsilon", epsilon, minimum=0.0)
            step_size = (1.25 if random_start else 1.0) * epsilon
        super().__init__(epsilon, num_steps=1, step_size=step_size, num_restarts=1,
                         random_start=random_start, loss=loss, norm=norm, **kwargs)

    def get_config(self):
        config = super().get_config()
        del config["num_steps"], config["num_restarts"]
        return config


@register("fgsm-rs")
class FGSMRS(FGSM):
    """FGSM from a uniform random start with step `1.25 * epsilon` (FastAT).

    Wong, Rice, Kolter, "Fast is better than free: Revisiting adversarial
    training", ICLR 2020. The same as `FGSM(random_start=True)`.

    Example:

    >>> x_adv = FGSMRS(epsilon=8 / 255)(model, x, y)   # doctest: +SKIP
    """

    def __init__(self, epsilon, *, random_start=True, **kwargs):
        super().__init__(epsilon, random_start=random_start, **kwargs)
