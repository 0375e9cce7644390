"""Build the tables of experiments/README.md from experiments/results/*/seed*.json.

    python experiments/tables.py            # print the tables
    python experiments/tables.py --write    # replace them in experiments/README.md
    python experiments/tables.py --check    # exit 1 if the README's tables differ

Every number in a table is read from a results file written by `experiments/run.py`;
a missing run shows as "not run". Each table sits in the README between
`<!-- table:NAME -->` and `<!-- end table -->`.
"""

import argparse
import glob
import json
import os
import re
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "experiments", "results")
README = os.path.join(ROOT, "experiments", "README.md")

FRAMEWORKS = [("standard", "mnist_standard", "mnist_standard_he"),
              ("PGD-AT", "mnist_pgd_at", "mnist_pgd_at_he"),
              ("TRADES", "mnist_trades", "mnist_trades_he"),
              ("ALP", "mnist_alp", "mnist_alp_he"),
              ("FreeAT", "mnist_free_at", "mnist_free_at_he"),
              ("FastAT", "mnist_fast_at", "mnist_fast_at_he")]
ABLATION = [("PGD-AT (CE(x') only)", "mnist_pgd_at"),
            ("ADR base: 0.5 CE(x) + 0.5 CE(x'), no term", "mnist_adr_base"),
            ("base + local compactness", "mnist_adr_lc"),
            ("base + global compactness", "mnist_adr_gc"),
            ("base + local smoothness", "mnist_adr_ls"),
            ("base + conditional entropy", "mnist_adr_ce"),
            ("base + all terms except local compactness", "mnist_adr_no_lc"),
            ("ADR, all reference terms", "mnist_adr"),
            ("ADR + HE", "mnist_adr_he")]
SEEDS = [("PGD-AT", "mnist_pgd_at"), ("PGD-AT + HE", "mnist_pgd_at_he"),
         ("ADR (on PGD-AT)", "mnist_adr")]
CIFAR = [("PGD-AT", "cifar10_pgd_at"), ("PGD-AT + HE", "cifar10_pgd_at_he"),
         ("TRADES", "cifar10_trades"), ("TRADES + HE", "cifar10_trades_he"),
         ("ADR (on PGD-AT)", "cifar10_adr")]


def load(name):
    """Results of one experiment, by seed."""
    runs = {}
    for path in sorted(glob.glob(os.path.join(RESULTS, name, "seed*.json"))):
        if path.endswith(".report.json"):
            continue
        with open(path) as handle:
            record = json.load(handle)
        runs[record["seed"]] = record
    return runs


def pct(value):
    return "n/a" if value is None else f"{100 * value:.1f}"


def _cells(record):
    e = record["evaluation"]
    failed = ", ".join(e["failed_checks"]) or "all pass"
    return [pct(record["pgd20"]["clean"]), pct(record["pgd20"]["pgd20"]), pct(e["clean"]),
            pct(e["autoattack"]), failed, f"{record['timings']['train_seconds'] / 60:.1f}",
            f"{e['seconds']['total'] / 60:.1f}"]


HEADER = ["clean (1k)", "PGD-20 (1k)", "clean (100)", "AutoAttack (100)", "failed checks",
          "train min", "eval min"]


def _row(label, name, seed=0):
    runs = load(name)
    if seed not in runs:
        return f"| {label} | " + " | ".join(["not run"] + [""] * (len(HEADER) - 1)) + " |"
    return f"| {label} | " + " | ".join(_cells(runs[seed])) + " |"


def _table(first, rows):
    lines = [f"| {first} | " + " | ".join(HEADER) + " |",
             "|" + "---|" * (len(HEADER) + 1)]
    return "\n".join(lines + rows)


def frameworks_table():
    rows = []
    for label, dense, he in FRAMEWORKS:
        rows.append(_row(label, dense))
        rows.append(_row(f"{label} + HE", he))
    return _table("MNIST, seed 0", rows)


def ablation_table():
    return _table("MNIST, seed 0", [_row(label, name) for label, name in ABLATION])


def cifar_table():
    return _table("CIFAR-10, seed 0", [_row(label, name) for label, name in CIFAR])


def _spread(values):
    if not values:
        return "not run"
    mean = statistics.mean(values)
    if len(values) == 1:
        return f"{100 * mean:.1f} (1 seed)"
    return f"{100 * mean:.1f} ± {100 * statistics.stdev(values):.1f}"


def seeds_table():
    lines = ["| MNIST | seeds | clean (1k) | PGD-20 (1k) | AutoAttack (100) | AutoAttack per seed |",
             "|---|---|---|---|---|---|"]
    for label, name in SEEDS:
        runs = load(name)
        seeds = sorted(runs)
        clean = [runs[s]["pgd20"]["clean"] for s in seeds]
        pgd = [runs[s]["pgd20"]["pgd20"] for s in seeds]
        aa = [runs[s]["evaluation"]["autoattack"] for s in seeds]
        per_seed = ", ".join(f"{pct(a)}" for a in aa) or "not run"
        lines.append(f"| {label} | {', '.join(map(str, seeds)) or '-'} | {_spread(clean)} | "
                     f"{_spread(pgd)} | {_spread(aa)} | {per_seed} |")
    base = load(SEEDS[0][1])
    for label, name in SEEDS[1:]:
        runs = load(name)
        seeds = sorted(set(runs) & set(base))

        def gaps(key):
            return [runs[s_][key[0]][key[1]] - base[s_][key[0]][key[1]] for s_ in seeds]

        clean, pgd = gaps(("pgd20", "clean")), gaps(("pgd20", "pgd20"))
        aa = gaps(("evaluation", "autoattack"))
        per_seed = ", ".join(f"{100 * a:+.1f}" for a in aa) or "not run"
        lines.append(f"| {label} minus {SEEDS[0][0]}, same seed | "
                     f"{', '.join(map(str, seeds)) or '-'} | {_spread(clean)} | {_spread(pgd)} | "
                     f"{_spread(aa)} | {per_seed} |")
    return "\n".join(lines)


TABLES = {"frameworks": frameworks_table, "seeds": seeds_table, "ablation": ablation_table,
          "cifar10": cifar_table}
_BLOCK = re.compile(r"(<!-- table:(\w+) -->\n)(.*?)(<!-- end table -->)", re.S)


def render_readme(text):
    def replace(match):
        name = match.group(2)
        if name not in TABLES:
            raise SystemExit(f"tables.py: error: Expected a table name among {sorted(TABLES)}. "
                             f"Received: <!-- table:{name} --> in {README}")
        return f"{match.group(1)}{TABLES[name]()}\n{match.group(4)}"
    return _BLOCK.sub(replace, text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help="update experiments/README.md")
    group.add_argument("--check", action="store_true",
                       help="exit 1 if experiments/README.md's tables differ from the results")
    args = parser.parse_args(argv)
    if not (args.write or args.check):
        for name, build in TABLES.items():
            print(f"<!-- table:{name} -->\n{build()}\n<!-- end table -->\n")
        return 0
    with open(README) as handle:
        text = handle.read()
    rendered = render_readme(text)
    if args.check:
        if rendered != text:
            print("experiments/README.md tables differ from experiments/results; run "
                  "python experiments/tables.py --write", file=sys.stderr)
            return 1
        print("experiments/README.md tables match experiments/results")
        return 0
    with open(README, "w") as handle:
        handle.write(rendered)
    print(f"updated {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
