"""Helpers shared by the benchmark scripts: timing, machine facts, JSON output."""

import json
import os
import platform
import time


def cpu_model():
    """The CPU's model name and whether it has AMX (bfloat16 matrix units), from /proc/cpuinfo:
    these machines differ, and mixed bfloat16 is faster only with AMX."""
    name, flags = None, set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and name is None:
                    name = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {"model": name, "amx": "amx_bf16" in flags}


def machine():
    """What the numbers were measured on."""
    import tensorflow as tf

    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu": cpu_model(),
        "tensorflow": tf.__version__,
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
    }


def timed(fn, repeats):
    """Run `fn` `repeats` times; return the list of wall-clock seconds."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def write_json(path, payload):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as handle:
        json.dump(payload, handle, indent=2)
    print(f"wrote {path}")
