"""Per-device defaults chosen from measurements (see benchmarks/README.md)."""

import functools

import tensorflow as tf


@functools.lru_cache(maxsize=None)
def has_accelerator():
    """True when TensorFlow sees a GPU or TPU."""
    return bool(tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU"))


def default_jit_compile():
    """Whether tfrobust compiles with XLA when the user leaves it to us.

    On CPU, XLA made the training of `small_cnn` slower for every framework
    (1.04 to 3.19 times per step; benchmarks/xla.py, table in
    benchmarks/README.md), so the default is off there. On GPU/TPU we keep Keras' own choice
    (XLA on), which this project could not measure on its CPU-only machines.
    """
    return has_accelerator()


def resolve_jit_compile(jit_compile):
    """Map `"auto"`/None to the measured per-device default; pass booleans through."""
    if jit_compile in ("auto", None):
        return default_jit_compile()
    if not isinstance(jit_compile, bool):
        raise ValueError(
            "Expected jit_compile to be True, False or 'auto'. "
            f"Received: jit_compile={jit_compile!r}"
        )
    return jit_compile


def default_unroll_steps():
    """Attack loops of up to this many steps are unrolled into the graph.

    On CPU a short PGD loop written out step by step runs faster than the same
    steps in a `tf.while_loop` (benchmarks/training.py, "attack loop"; the
    ratio is in benchmarks/README.md). Longer loops (APGD's 100 steps) stay
    loops to keep graphs small. On GPU/TPU, where XLA compiles the loop, they
    stay loops: not measured on this project's CPU-only machines.
    """
    return 0 if has_accelerator() else 20
