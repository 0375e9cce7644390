"""Run experiments: train with `tfrobust train`, evaluate with `tfrobust evaluate`, record.

    python experiments/run.py NAME [NAME ...] [--seeds 0 1 2] [--eval-limit 500] [--commit]

NAME is a config file `experiments/configs/NAME.toml`: options of `tfrobust train` over its
documented defaults (`tfrobust train --help`), read exactly as `tfrobust train --config`
reads them. For every NAME and seed this runs, each in a fresh process, from the
repository root:

    python -m tfrobust train --config experiments/configs/NAME.toml --seed S \\
        --output experiments/runs/NAME-seedS
    python -m tfrobust evaluate experiments/runs/NAME-seedS/model.keras \\
        --report experiments/runs/NAME-seedS/report --limit EVAL_LIMIT (500)

and writes `experiments/results/NAME/seedS.json` (the resolved options, package version,
git commit, timings, the training history, clean and PGD-20 accuracy on the config's
`eval_limit` test images, and the evaluation report's numbers) with the full
`seedS.report.json` beside it. Model weights stay in `experiments/runs/` (not committed).

An interrupted run resumes: the same command picks up training from its last epoch backup
and the evaluation from its cache; finished results are skipped unless --overwrite.
"""

import argparse
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "experiments", "configs")
RUNS = os.path.join(ROOT, "experiments", "runs")
RESULTS = os.path.join(ROOT, "experiments", "results")
# The evaluation report (standard AutoAttack, epsilon sweep, checks) runs on the first
# EVAL_LIMIT test images; PGD-20 and clean accuracy use the config's eval_limit (1,000+).
EVAL_LIMIT = 500
SWEEP_ATTACKS = "pgd"


def config_path(name):
    path = os.path.join(CONFIGS, f"{name}.toml")
    if not os.path.isfile(path):
        known = sorted(f[:-5] for f in os.listdir(CONFIGS) if f.endswith(".toml"))
        raise SystemExit(f"run.py: error: Expected NAME among {known}. Received: {name!r} "
                         f"(no file {os.path.relpath(path, ROOT)})")
    return path


def _tfrobust(args, log):
    """Run `python -m tfrobust ARGS` from the repository root, teeing output to `log`."""
    command = [sys.executable, "-m", "tfrobust", *args]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    with open(log, "a") as handle:
        handle.write(f"$ python -m tfrobust {' '.join(args)}\n")
        handle.flush()
        started = time.perf_counter()
        status = subprocess.call(command, cwd=ROOT, env=env, stdout=handle,
                                 stderr=subprocess.STDOUT)
    if status != 0:
        raise SystemExit(f"run.py: error: `python -m tfrobust {' '.join(args)}` exited with "
                         f"status {status}; its output is in {os.path.relpath(log, ROOT)}")
    return time.perf_counter() - started


def _summary(report):
    """The numbers a table needs from an evaluation report."""
    sweep = report["sweep"]
    return {
        "examples": report["data"]["num_examples"],
        "epsilon": report["threat_model"]["epsilon"],
        "clean": report["clean_accuracy"],
        "autoattack": report["robust_accuracy"],
        "after_each_attack": {a["name"]: a["robust_accuracy_after"] for a in report["attacks"]},
        "attack_seconds": {a["name"]: round(a["seconds"], 1) for a in report["attacks"]},
        "sweep": {"epsilons": sweep["epsilons"],
                  **{c["name"]: c["accuracy"] for c in sweep["curves"]}},
        "checks": {c["name"]: c["passed"] for c in report["checks"]},
        "failed_checks": [c["name"] for c in report["checks"] if not c["passed"]],
        "seconds": report["timings"],
    }


def run_one(name, seed, eval_limit, overwrite):
    out = os.path.join(RUNS, f"{name}-seed{seed}")
    rel_out = os.path.relpath(out, ROOT)
    result_dir = os.path.join(RESULTS, name)
    result = os.path.join(result_dir, f"seed{seed}.json")
    if os.path.exists(result) and not overwrite:
        print(f"{name} seed {seed}: done already ({os.path.relpath(result, ROOT)})", flush=True)
        return result
    os.makedirs(out, exist_ok=True)
    log = os.path.join(out, "log.txt")
    config = os.path.relpath(config_path(name), ROOT)
    train_args = ["train", "--config", config, "--seed", str(seed), "--output", rel_out]
    evaluate_args = ["evaluate", f"{rel_out}/model.keras", "--report", f"{rel_out}/report",
                     "--limit", str(eval_limit), "--sweep-attacks", SWEEP_ATTACKS, "--quiet"]
    started = time.perf_counter()
    if overwrite:
        for stale in ("model.keras", "history.json", "config.json"):
            if os.path.exists(os.path.join(out, stale)):
                os.remove(os.path.join(out, stale))
        # The report's cache and an interrupted run's backup would otherwise be resumed.
        for stale in ("report", "backup"):
            shutil.rmtree(os.path.join(out, stale), ignore_errors=True)
    train_seconds = None
    if not os.path.exists(os.path.join(out, "model.keras")):
        print(f"{name} seed {seed}: training ({rel_out}/log.txt)", flush=True)
        train_seconds = _tfrobust(train_args, log)
    print(f"{name} seed {seed}: evaluating", flush=True)
    evaluate_seconds = _tfrobust(evaluate_args, log)
    with open(os.path.join(out, "config.json")) as handle:
        config_json = json.load(handle)
    with open(os.path.join(out, "history.json")) as handle:
        history = json.load(handle)
    with open(os.path.join(out, "report", "report.json")) as handle:
        report = json.load(handle)
    options = config_json["options"]
    record = {
        "experiment": name,
        "seed": seed,
        "config_file": config,
        "commands": ["python -m tfrobust " + " ".join(train_args),
                     "python -m tfrobust " + " ".join(evaluate_args)],
        "options": options,
        "provenance": {k: v for k, v in config_json.items()
                       if k not in ("options", "model", "data_info")},
        # `train_seconds` counts the training from epoch `train_seconds_since_epoch` on (0:
        # every session's, as tfrobust keeps the time in its backups; a run resumed from an
        # older backup: its epochs since); the process seconds only the last session's.
        "timings": {"train_seconds": history["train_seconds"],
                    "train_seconds_since_epoch": history.get(
                        "train_seconds_since_epoch", history.get("resumed_after_epoch", 0)),
                    "resumed_after_epoch": history.get("resumed_after_epoch", 0),
                    "evaluation_units": report.get("units"),
                    "train_process_seconds": None if train_seconds is None
                    else round(train_seconds, 1),
                    "evaluate_process_seconds": round(evaluate_seconds, 1),
                    "wall_seconds_this_invocation": round(time.perf_counter() - started, 1),
                    "threads": {k: os.environ.get(k) for k in
                                ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")}},
        "history": history["epochs"],
        "pgd20": {"examples": options["eval_limit"],
                  "clean": history["test"]["accuracy"],
                  "pgd20": history["test"].get("adv_accuracy")},
        "evaluation": _summary(report),
    }
    os.makedirs(result_dir, exist_ok=True)
    shutil.copyfile(os.path.join(out, "report", "report.json"),
                    os.path.join(result_dir, f"seed{seed}.report.json"))
    temporary = result + ".tmp"
    with open(temporary, "w") as handle:
        json.dump(record, handle, indent=2, default=str)
    os.replace(temporary, result)
    e = record["evaluation"]
    print(f"{name} seed {seed}: clean {record['pgd20']['clean']:.3f}, PGD-20 "
          f"{record['pgd20']['pgd20']:.3f} ({options['eval_limit']} images); AutoAttack "
          f"{e['autoattack']:.3f} ({e['examples']} images), failed checks "
          f"{e['failed_checks'] or 'none'}; train {history['train_seconds']:.0f} s, "
          f"evaluate {evaluate_seconds:.0f} s", flush=True)
    return result


def _commit(name, seed, result):
    """Commit one experiment's result files (and nothing else that is staged).

    Two lanes share one worktree's git index, so the commit holds an exclusive lock on a file
    in `experiments/runs/`: without it, two lanes starting together both found their first
    results done and raced for `index.lock`, and one lane died.
    """
    os.makedirs(RUNS, exist_ok=True)
    with open(os.path.join(RUNS, ".commit.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        _commit_locked(name, seed, result)


def _commit_locked(name, seed, result):
    paths = [result, result[:-len(".json")] + ".report.json"]
    subprocess.check_call(["git", "add", "--", *paths], cwd=ROOT)
    if subprocess.call(["git", "diff", "--cached", "--quiet", "--", *paths], cwd=ROOT) == 0:
        return  # already committed
    with open(result) as handle:
        record = json.load(handle)
    e = record["evaluation"]
    message = (f"experiments: {name} seed {seed}: clean {100 * record['pgd20']['clean']:.1f}, "
               f"PGD-20 {100 * record['pgd20']['pgd20']:.1f} ({record['pgd20']['examples']} "
               f"images), AutoAttack {100 * e['autoattack']:.1f} ({e['examples']} images)")
    subprocess.check_call(["git", "commit", "--quiet", "-m", message, "--", *paths], cwd=ROOT)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", metavar="NAME",
                        help="config names in experiments/configs (without .toml)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--eval-limit", type=int, default=EVAL_LIMIT,
                        help=f"test images of the evaluation report (default {EVAL_LIMIT})")
    parser.add_argument("--overwrite", action="store_true",
                        help="train and evaluate again even if results exist")
    parser.add_argument("--commit", action="store_true",
                        help="git-commit each result as it finishes (long queues lose nothing)")
    args = parser.parse_args(argv)
    for name in args.names:
        config_path(name)  # every name checked before any work
    if args.eval_limit < 1:
        parser.error(f"Expected --eval-limit >= 1. Received: --eval-limit {args.eval_limit}")
    for seed in args.seeds:
        for name in args.names:
            result = run_one(name, seed, args.eval_limit, args.overwrite)
            if args.commit:
                _commit(name, seed, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
