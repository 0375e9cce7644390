"""Argument types and parser behaviour shared by the subcommands (no TensorFlow here)."""

import argparse
import difflib


def epsilon(text):
    """An epsilon from the command line: a number (`0.3`) or a fraction (`8/255`); whether it
    is in range is checked where the attack is made, naming `epsilon`."""
    parts = text.split("/")
    try:
        if len(parts) == 2:
            value = float(parts[0]) / float(parts[1])
        elif len(parts) == 1:
            value = float(text)
        else:
            raise ValueError(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(
            f"expected a number or a fraction such as 8/255, received {text!r}") from None
    return value  # its range is the attack's to check, which names the argument


def image_size(text):
    """An image size from the command line: `HxW` (`32x32`) or one number for a square."""
    parts = text.lower().split("x")
    try:
        size = [int(part) for part in parts]
    except ValueError:
        size = []
    if len(parts) == 1 and size:
        size = size * 2
    if len(size) != 2 or min(size) < 1:
        raise argparse.ArgumentTypeError(
            f"expected HxW such as 32x32 (or one number), received {text!r}")
    return size


class Parser(argparse.ArgumentParser):
    """An `ArgumentParser` that takes no abbreviations and, for an unknown option, names the
    closest valid one."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def unknown(self, extras):
        """Exit with this parser's usage, naming `extras` and the closest valid options."""
        known = [option for action in self._actions for option in action.option_strings]
        hints = []
        for extra in extras:
            close = difflib.get_close_matches(extra.split("=")[0], known, n=1, cutoff=0.6)
            if close:
                hints.append(f"{extra.split('=')[0]}: did you mean {close[0]}?")
        message = f"unrecognized arguments: {' '.join(extras)}"
        self.error("; ".join([message] + hints))


def model_file(text, argument="MODEL"):
    """`(path, zoo entry or None)` of a MODEL argument: a `.keras` file or `pretrained:NAME`."""
    from tfrobust.models import zoo

    entry = None
    if text.startswith(zoo.PREFIX):
        entries = {item.name: item for item in zoo.pretrained()}
        entry = entries.get(text[len(zoo.PREFIX):])
        if entry is None:
            raise ValueError(f"Expected {argument} {zoo.PREFIX}NAME with NAME one of "
                             f"{sorted(entries)}. Received: {argument} {text!r}")
        text = entry.model_file
    check_model_file(text, argument)
    return text, entry


def check_model_file(path, argument="MODEL"):
    """Refuse a model path that is not a `.keras` file, saying what it is instead."""
    import os

    received = f"Received: {argument} {path!r}"
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "model.keras")):
            raise FileNotFoundError(f"Expected a .keras model file. {received} is a directory "
                                    f"holding one: pass {os.path.join(path, 'model.keras')}")
        if os.path.isfile(os.path.join(path, "saved_model.pb")):
            raise FileNotFoundError(
                f"Expected a .keras model file. {received} is a SavedModel directory (what "
                "tfrobust export writes for serving), which cannot be attacked or exported "
                "again; use the .keras file it came from (tfrobust train writes "
                "OUTPUT/model.keras).")
        raise FileNotFoundError(f"Expected a .keras model file. {received} is a directory "
                                "(tfrobust train writes OUTPUT/model.keras)")
    if not os.path.exists(path):
        raise FileNotFoundError(f"Expected a .keras model file. {received}, which does not "
                                "exist (tfrobust train writes OUTPUT/model.keras)")
