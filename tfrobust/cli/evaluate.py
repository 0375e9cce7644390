"""`tfrobust evaluate`: a robustness report with gradient-masking checks."""

import argparse
import json
import logging
import os
import shutil
import sys

from tfrobust.cli import arguments
from tfrobust.cli import catalog

EXIT_CHECKS_FAILED = 3
EXIT_INTERRUPTED = 130


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate robustness: attack ensemble, epsilon sweep and masking checks",
        description=(
            "Evaluate a saved model under attack and write DIR/report.json, DIR/report.png "
            "and DIR/model_card.json (the fields of a RobustBench model entry, each with its "
            "source). Finished batches are cached in DIR/cache: run the same command again "
            "after an interruption to resume. DIR is locked while a run writes it; --shard "
            "K/N splits the work over processes or machines sharing DIR."
        ),
    )
    parser.add_argument("model", metavar="MODEL",
                        help="a .keras file (e.g. from tfrobust train), or pretrained:NAME, a "
                             "model of the zoo shipped with tfrobust (" + _zoo_names() + ")")
    parser.add_argument("--data", help="dataset name, file or image folder (resized to the "
                                       "model's input; default: the one the model was "
                                       "trained on, from the config.json beside MODEL; for "
                                       "pretrained:NAME, its offline test data)")
    parser.add_argument("--split", default="test", help="split to evaluate on (default test)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N examples")
    parser.add_argument("--norm", choices=("linf", "l2"),
                        help="threat model norm (default: the model's evaluation attack's)")
    parser.add_argument("--epsilon", type=arguments.epsilon,
                        help="threat model radius (default: the model's evaluation attack's)")
    parser.add_argument("--attacks", default="standard",
                        help="'standard' (AutoAttack: APGD-CE, APGD-T, FAB-T, Square 5000) or "
                             "comma-separated attack names (default standard)")
    parser.add_argument("--sweep-attacks", default="pgd,apgd-dlr",
                        help="attacks of the epsilon sweep (default pgd,apgd-dlr; pgd is PGD-20)")
    parser.add_argument("--epsilons",
                        help="comma-separated sweep budgets (default 0, 1/4, 1/2, 3/4, 1, 1.5 "
                             "and 2x epsilon; 0, epsilon and the large epsilon of the check "
                             "are always added, budgets above the large epsilon dropped)")
    parser.add_argument("--checks", default="all",
                        help="'all', 'none' or comma-separated check names")
    parser.add_argument("--batch-size", type=int, default=256, help="examples per attack call")
    parser.add_argument("--seed", type=int, default=0, help="attack seed (default 0)")
    parser.add_argument("--tolerance", type=float, default=0.02,
                        help="accuracy slack of checks comparing two attacks (default 0.02)")
    parser.add_argument("--report", required=True, metavar="DIR",
                        help="directory for report.json, report.png, model_card.json (a "
                             "RobustBench-style entry) and the resume cache; "
                             "locked while this runs (a second run into it is refused)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier report in DIR")
    parser.add_argument("--shard", metavar="K/N",
                        help="compute only the K-th of N shares of the work into DIR/cache and "
                             "write no report; shards may run at once (processes, or machines "
                             "sharing DIR); the same command without --shard then reuses their "
                             "units and writes the report")
    parser.add_argument("--precision", choices=catalog.current()["precisions"],
                        default="float32",
                        help="what the gradient attacks compute in (default float32); "
                             "mixed_bfloat16: a bfloat16 copy of the model, faster on CPUs with "
                             "AMX, maybe slower without; Square and the judging of every break "
                             "stay with the model itself")
    parser.add_argument("--strict", action="store_true",
                        help=f"exit with status {EXIT_CHECKS_FAILED} if any check fails")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)
    return parser


class _NoRetracingWarning(logging.Filter):
    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


def _zoo_names():
    """The zoo's names, read without importing Keras (the parser is built before TensorFlow
    starts, quietly)."""
    index = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "models", "zoo_data", "index.json")
    with open(index) as handle:
        return ", ".join(item["name"] for item in json.load(handle)["models"])


def _default_data(model_path):
    """The dataset a `tfrobust train` run used, from the config.json beside its model."""
    config_path = os.path.join(os.path.dirname(os.path.abspath(model_path)), "config.json")
    if os.path.isfile(config_path):
        try:
            with open(config_path) as handle:
                return json.load(handle)["options"]["data"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return None


def _epsilons(text):
    """`--epsilons 0.05,0.1` (or `2/255,8/255`) as floats (None when not given)."""
    if text is None:
        return None
    try:
        return [arguments.epsilon(part) for part in text.split(",")]
    except argparse.ArgumentTypeError:
        raise ValueError("Expected --epsilons to be comma-separated numbers or fractions. "
                         f"Received: --epsilons {text!r}") from None


def _remove_if_empty(report_dir, remove_dir=True):
    """Undo the directories a failed run made: an empty cache, and the report's directory
    (if `remove_dir`: this run made it) when it holds nothing but the lock."""
    from tfrobust.utils.locks import LOCK_FILE

    cache_dir = os.path.join(report_dir, "cache")
    if os.path.isdir(cache_dir) and not os.listdir(cache_dir):
        os.rmdir(cache_dir)
    if remove_dir and set(os.listdir(report_dir)) <= {LOCK_FILE}:
        shutil.rmtree(report_dir)


def _units_in(cache_dir):
    """Finished units in an evaluation cache."""
    if not os.path.isdir(cache_dir):
        return 0
    return sum(name.endswith(".npz") for name in os.listdir(cache_dir))


def _check_report_dir(args):
    """Refuse a --report that is a file, or holds a report (unless --overwrite, or a shard)."""
    from tfrobust.evaluation.report import REPORT_FILE

    if os.path.exists(args.report) and not os.path.isdir(args.report):
        raise FileExistsError(f"Expected a directory. Received: --report {args.report!r} is a "
                              "file")
    if (os.path.exists(os.path.join(args.report, REPORT_FILE)) and not args.overwrite
            and not args.shard):
        raise FileExistsError(f"Expected a report directory without an earlier report. "
                              f"Received: --report {args.report!r} already holds {REPORT_FILE}; "
                              "pass --overwrite to replace it.")


def run(args):
    from tfrobust.utils.locks import DirectoryLock, DirectoryLockedError

    epsilons = _epsilons(args.epsilons)
    model, zoo_entry = arguments.model_file(args.model)
    data = args.data or (zoo_entry.data if zoo_entry else _default_data(model))
    if data is None:
        raise ValueError("Expected --data (no config.json beside the model names its dataset). "
                         "Received: --data not given")
    _check_report_dir(args)
    checks = {"all": True, "none": False}.get(args.checks, args.checks)

    import tensorflow as tf

    import tfrobust

    # Each attack traces once whatever its batch sizes (a signature with any batch size,
    # tested in test_pgd.py); the sweep and the checks make one attack per epsilon and
    # setting, each a graph of its own, which TensorFlow's frequent-tracing heuristic
    # reports as the retracing of one function: noise here.
    tf.get_logger().addFilter(_NoRetracingWarning())
    cache_dir = os.path.join(args.report, "cache")
    if _units_in(cache_dir):
        print(f"tfrobust evaluate: resuming: {_units_in(cache_dir)} finished units in "
              f"{cache_dir}")
    created = not os.path.exists(args.report)
    os.makedirs(args.report, exist_ok=True)
    shard = f" --shard {args.shard}" if args.shard else ""
    # Shards of one evaluation share the directory; a whole run holds it alone.
    lock = DirectoryLock(args.report, f"tfrobust evaluate {args.model} --report "
                         f"{args.report}{shard}", shared=bool(args.shard))
    try:
        with lock:
            report = tfrobust.evaluate(
                model, data, norm=args.norm, epsilon=args.epsilon, attacks=args.attacks,
                sweep_attacks=args.sweep_attacks, epsilons=epsilons, checks=checks,
                split=args.split, limit=args.limit, batch_size=args.batch_size,
                seed=args.seed, tolerance=args.tolerance, cache_dir=cache_dir,
                shard=args.shard, precision=args.precision, verbose=not args.quiet,
            )
            paths = report.save(args.report) if report is not None else []
    except KeyboardInterrupt:
        print(f"\ntfrobust evaluate: interrupted; finished units are kept in {cache_dir}. "
              "Run the same command again to resume.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except DirectoryLockedError:
        raise  # the directory is the other run's: leave it as it is
    except Exception:
        _remove_if_empty(args.report, remove_dir=created)
        raise
    if report is None:
        print(f"tfrobust evaluate: shard {args.shard} done; {cache_dir} holds "
              f"{_units_in(cache_dir)} units. "
              "Run the same command without --shard to write the report.")
        return 0
    print(report.summary())
    print(f"Report written: {', '.join(paths)} ({report.units['computed']} units computed, "
          f"{report.units['reused']} reused)")
    if args.strict and not report.passed:
        return EXIT_CHECKS_FAILED
    return 0
