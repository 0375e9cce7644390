"""Carry unfinished experiment runs from one session to the next through the main branch.

    python experiments/carry.py save --main /work/main      # from the experiment worktree
    python experiments/carry.py restore --main /work/main   # into a new worktree

A session's machine keeps only what is committed on main: an experiment worktree and its
branch are gone at the next session, and with them every epoch trained and every evaluation
unit computed since the last finished result. `save`, run in the worktree near the end of a
session, copies what a resumed run needs into MAIN/experiments/carry/ for a commit on main:

- for each run directory `experiments/runs/NAME-seedS` without a finished result: its training
  backup (`backup/`: weights and optimizer state of the last finished epoch), the trained
  model and its `config.json` and `history.json` once training has ended, the evaluation's
  unit cache (`report/cache/`) and `log.txt`;
- the finished models of the zoo's experiments (`--keep-models`): `model.keras` and
  `config.json`, both of which `experiments/zoo.py` reads for the seed it ships;
- the results committed on the worktree's branch, under `results/` (bring them to main's
  `experiments/results/` with the tables: see experiments/README.md);
- `PINNED`: the main commit the worktree runs (the merge base of its branch and main).

`restore`, in a new worktree made at MAIN/experiments/carry/PINNED, copies the runs back to
`experiments/runs/` and main's finished CIFAR-10 results into `experiments/results/` (so that
`experiments/lanes.sh` skips them); the lanes then resume each run where it stopped. A run's
state in the carry replaces any older state of that run there, and a run finished since the
last save (not one of the zoo's) leaves the carry's `runs/`: its result is carried instead.
"""

import argparse
import glob
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = os.path.join(ROOT, "experiments", "runs")
RESULTS = os.path.join(ROOT, "experiments", "results")
KEEP_MODELS = "cifar10_pgd_at,cifar10_pgd_at_he"
# What a resumed run needs, relative to its run directory.
STATE = ("backup", "model.keras", "config.json", "history.json", "log.txt",
         os.path.join("report", "cache"))


def _error(message):
    raise SystemExit(f"carry.py: error: {message}")


def _carry_dir(main):
    if not os.path.isdir(os.path.join(main, ".git")) and not os.path.isfile(
            os.path.join(main, ".git")):
        _error(f"Expected --main to be a git checkout of main. Received: {main!r}")
    return os.path.join(main, "experiments", "carry")


def _split(run):
    """`NAME-seedS` -> (NAME, S)."""
    name, _, seed = run.rpartition("-seed")
    return name, seed


def _copy(source, target):
    if os.path.isdir(source):
        shutil.copytree(source, target)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(source, target)


def save(main, keep_models):
    carry = _carry_dir(main)
    pinned = subprocess.check_output(["git", "merge-base", "HEAD", "main"], cwd=ROOT,
                                     text=True).strip()
    os.makedirs(carry, exist_ok=True)
    with open(os.path.join(carry, "PINNED"), "w") as handle:
        handle.write(pinned + "\n")
    saved = []
    for run_dir in sorted(glob.glob(os.path.join(RUNS, "*-seed*"))):
        run = os.path.basename(run_dir)
        name, seed = _split(run)
        finished = os.path.isfile(os.path.join(RESULTS, name, f"seed{seed}.json"))
        target = os.path.join(carry, "runs", run)
        if finished and name not in keep_models:
            # Its result is carried; a backup an earlier save carried is stale.
            shutil.rmtree(target, ignore_errors=True)
            continue
        parts = ("model.keras", "config.json") if finished else STATE
        parts = [p for p in parts if os.path.exists(os.path.join(run_dir, p))]
        if not parts:
            continue
        shutil.rmtree(target, ignore_errors=True)
        for part in parts:
            _copy(os.path.join(run_dir, part), os.path.join(target, part))
        saved.append(f"{run}: {', '.join(parts)}")
    for result in sorted(glob.glob(os.path.join(RESULTS, "cifar10_*", "seed*"))):
        relative = os.path.relpath(result, RESULTS)
        _copy(result, os.path.join(carry, "results", relative))
        saved.append(f"result {relative}")
    ignored = subprocess.check_output(
        ["git", "ls-files", "--others", "--ignored", "--exclude-standard", "--", carry],
        cwd=main, text=True).split()
    if ignored:  # a carry git would not commit carries nothing across sessions
        _error(f"Expected main's .gitignore to let the carry be committed. Received: "
               f"{len(ignored)} ignored files, e.g. {ignored[0]!r}")
    print(f"carried into {carry} (pinned {pinned[:10]}):")
    for line in saved:
        print(f"  {line}")


def restore(main):
    carry = _carry_dir(main)
    if not os.path.isdir(os.path.join(carry, "runs")):
        _error(f"Expected a carry with runs in {carry!r}. Received: no such directory")
    run_dirs = sorted(glob.glob(os.path.join(carry, "runs", "*-seed*")))
    existing = [os.path.join(RUNS, os.path.basename(d)) for d in run_dirs
                if os.path.exists(os.path.join(RUNS, os.path.basename(d)))]
    if existing:  # checked before anything is copied
        _error(f"Expected no run directories of the carry before restoring. Received: "
               f"{existing} exist; move them away or restore into a new worktree")
    restored = []
    for run_dir in run_dirs:
        shutil.copytree(run_dir, os.path.join(RUNS, os.path.basename(run_dir)))
        restored.append(os.path.basename(run_dir))
    sources = [os.path.join(carry, "results"), os.path.join(main, "experiments", "results")]
    for source in sources:
        for result in sorted(glob.glob(os.path.join(source, "cifar10_*", "seed*"))):
            target = os.path.join(RESULTS, os.path.relpath(result, source))
            if not os.path.exists(target):
                _copy(result, target)
                restored.append(f"result {os.path.relpath(target, ROOT)}")
    print(f"restored from {carry}:")
    for line in restored:
        print(f"  {line}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("save", "restore"))
    parser.add_argument("--main", required=True, help="the checkout of main that carries")
    parser.add_argument("--keep-models", default=KEEP_MODELS,
                        help=f"experiments whose finished models are kept for the zoo "
                             f"(comma-separated; default {KEEP_MODELS})")
    args = parser.parse_args(argv)
    main_dir = os.path.abspath(args.main)
    if os.path.realpath(main_dir) == os.path.realpath(ROOT):
        _error(f"Expected --main to be another checkout than this worktree. Received: "
               f"{args.main!r}")
    if args.action == "save":
        save(main_dir, set(args.keep_models.split(",")))
    else:
        restore(main_dir)


if __name__ == "__main__":
    sys.exit(main())
