"""Where each run of an experiment queue stands: done, training, evaluating or not begun.

    python experiments/status.py [LANE ...] [--root DIR]

LANE is a queue of `experiments/lanes.sh` (a, b, cifar-a, cifar-b; default the two CIFAR-10
lanes). For every NAME:SEED of the queue, in order, from the files the runs leave behind
(nothing is imported from TensorFlow, so it answers in a moment beside the lanes):

    done        experiments/results/NAME/seedS.json: clean, PGD-20 and AutoAttack accuracy
    training    experiments/runs/NAME-seedS/backup/state.json: the last backed-up epoch of
                the config's, when, and each epoch's validation (clean / PGD-20); from the
                run's log.txt, the epoch under way, the last batch its progress bar showed,
                and when the log was last written (a stalled run shows an old time)
    evaluating  the run's model.keras is written: the report units cached so far
    not begun   neither

--root is the checkout holding `experiments/` (default: this one; a worktree's lanes write
their runs in the worktree, their results in its branch).
"""

import argparse
import json
import os
import re
import sys
import time

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LANES = ("a", "b", "cifar-a", "cifar-b")


def queue(root, lane):
    """The (NAME, SEED) items of one lane of `root`'s experiments/lanes.sh, in order."""
    with open(os.path.join(root, "experiments", "lanes.sh")) as handle:
        text = handle.read()
    found = re.search(rf"\n  {re.escape(lane)}\) queue=\"([^\"]*)\"", text)
    if found is None:
        raise SystemExit(f"status.py: error: Expected LANE among {list(LANES)}. "
                         f"Received: {lane!r}")
    return [(name, int(seed))
            for name, seed in re.findall(r"\b([a-z0-9_]+):(\d+)(?::\d+)?\b", found.group(1))]


def _pct(value):
    return f"{100 * value:.1f}"


def _when(path):
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(path)))


def _validation(history):
    return ", ".join(f"{_pct(h['val_accuracy'])}/{_pct(h['val_adv_accuracy'])}"
                     for h in history if "val_adv_accuracy" in h)


def _under_way(run):
    """" (epoch E at batch B of N, log HH:MM)" from the run's log.txt (Keras' progress bar),
    or "" without a log.

    After fit, `tfrobust train` evaluates on the test split (its own progress bar): then
    " (trained; evaluating on the test split, log HH:MM)".
    """
    log = os.path.join(run, "log.txt")
    if not os.path.isfile(log):
        return ""
    with open(log, "rb") as handle:
        text = handle.read().decode("utf-8", "replace")
    epochs = re.findall(r"Epoch (\d+)/\d+", text)
    if not epochs:
        return ""
    tail = text[text.rfind(f"Epoch {epochs[-1]}/"):]
    when = f"log {_when(log)[-5:]}"
    if "Evaluating on the test split" in tail:  # `tfrobust train`'s evaluation after fit
        return f" (trained; evaluating on the test split, {when})"
    batches = re.findall(r"(\d+)/(\d+)\x1b\[0m", tail)  # "\x1b[1m181/391\x1b[0m"
    at = f" at batch {batches[-1][0]} of {batches[-1][1]}" if batches else ""
    return f" (epoch {epochs[-1]}{at}, {when})"


def status(root, name, seed):
    """One line on where the run NAME, seed `seed`, stands."""
    result = os.path.join(root, "experiments", "results", name, f"seed{seed}.json")
    if os.path.isfile(result):
        with open(result) as handle:
            record = json.load(handle)
        e, p = record["evaluation"], record["pgd20"]
        failed = ", ".join(e["failed_checks"]) or "none"
        return (f"done: clean {_pct(p['clean'])}, PGD-20 {_pct(p['pgd20'])} "
                f"({p['examples']:,} images); AutoAttack {_pct(e['autoattack'])} "
                f"({e['examples']:,} images); failed checks {failed}")
    run = os.path.join(root, "experiments", "runs", f"{name}-seed{seed}")
    if os.path.isfile(os.path.join(run, "model.keras")):
        cache = os.path.join(run, "report", "cache")
        units = len(os.listdir(cache)) if os.path.isdir(cache) else 0
        return f"evaluating: {units} report units cached"
    state = os.path.join(run, "backup", "state.json")
    if os.path.isfile(state):
        with open(state) as handle:
            backup = json.load(handle)
        with open(os.path.join(root, "experiments", "configs", f"{name}.toml"), "rb") as handle:
            epochs = tomllib.load(handle).get("epochs", "?")
        return (f"training: epoch {backup['epoch']} of {epochs} backed up {_when(state)}"
                f"{_under_way(run)}; "
                f"validation clean/PGD-20 {_validation(backup['history']) or '-'}")
    if os.path.isdir(run):
        return f"training: no epoch backed up yet{_under_way(run)}"
    return "not begun"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lanes", nargs="*", metavar="LANE", default=["cifar-a", "cifar-b"],
                        help=f"queues of experiments/lanes.sh, among {', '.join(LANES)}")
    parser.add_argument("--root", default=ROOT,
                        help="the checkout (or worktree) holding experiments/ (default: this)")
    args = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(args.root, "experiments", "lanes.sh")):
        parser.error(f"Expected --root to hold experiments/lanes.sh. Received: --root "
                     f"{args.root!r}")
    queues = {lane: queue(args.root, lane) for lane in args.lanes}
    for lane, items in queues.items():
        print(f"lane {lane}:")
        for name, seed in items:
            print(f"  {name} seed {seed}: {status(args.root, name, seed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
