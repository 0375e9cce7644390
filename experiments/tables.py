"""Build the tables of experiments/README.md (and README.md's headline) from experiments/results.

    python experiments/tables.py            # print the tables
    python experiments/tables.py --write    # replace them in experiments/README.md, README.md
    python experiments/tables.py --check    # exit 1 if either README's tables differ

Every number in a table is read from a results file written by `experiments/run.py`;
a missing run shows as "not run". Each table sits in a README between
`<!-- table:NAME -->` and `<!-- end table -->`.
"""

import argparse
import glob
import json
import math
import os
import re
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "experiments", "results")
README = os.path.join(ROOT, "experiments", "README.md")
TOP_README = os.path.join(ROOT, "README.md")
EVAL_LIMIT = 500  # experiments/run.py's default --eval-limit

SEEDS = [("PGD-AT", "mnist_pgd_at"), ("PGD-AT + HE", "mnist_pgd_at_he"),
         ("ADR (on PGD-AT)", "mnist_adr")]
ABLATION = [("PGD-AT (CE(x') only)", "mnist_pgd_at"),
            ("ADR base: 0.5 CE(x) + 0.5 CE(x'), no term", "mnist_adr_base"),
            ("base + local compactness", "mnist_adr_lc"),
            ("base + global compactness", "mnist_adr_gc"),
            ("base + local smoothness", "mnist_adr_ls"),
            ("base + conditional entropy", "mnist_adr_ce"),
            ("ADR, all reference terms", "mnist_adr"),
            ("ADR + HE", "mnist_adr_he")]
CIFAR_SEEDS = [("PGD-AT", "cifar10_pgd_at"), ("PGD-AT + HE", "cifar10_pgd_at_he")]
CIFAR_FRAMEWORKS = [("PGD-AT", "cifar10_pgd_at"), ("PGD-AT + HE", "cifar10_pgd_at_he"),
                    ("TRADES", "cifar10_trades"), ("TRADES + HE", "cifar10_trades_he"),
                    ("FastAT", "cifar10_fast_at"), ("FastAT + HE", "cifar10_fast_at_he"),
                    ("ADR (on PGD-AT)", "cifar10_adr")]
# Each framework with the dense head against the same framework with HE (the seeds of the
# PGD-AT pair are in CIFAR_SEEDS).
CIFAR_HE_PAIRS = [(("FastAT", "cifar10_fast_at"), ("FastAT + HE", "cifar10_fast_at_he")),
                  (("TRADES", "cifar10_trades"), ("TRADES + HE", "cifar10_trades_he"))]
# The other frameworks with the dense head against PGD-AT, on the images both reports have.
CIFAR_AGAINST_PGD_AT = [("TRADES", "cifar10_trades"), ("FastAT", "cifar10_fast_at"),
                        ("ADR (on PGD-AT)", "cifar10_adr")]
FINDINGS = [("ADR at the reference latent (flatten, 1,024)", "mnist_adr"),
            ("ADR at the 200-unit features layer", "mnist_adr_features"),
            ("ADR, reference initialisation", "mnist_adr_reference_init"),
            ("PGD-AT", "mnist_pgd_at"),
            ("PGD-AT, reference initialisation", "mnist_pgd_at_reference_init"),
            ("PGD-AT without dropout", "mnist_pgd_at_no_dropout")]


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


def _report(record):
    path = os.path.join(RESULTS, record["experiment"], f"seed{record['seed']}.report.json")
    with open(path) as handle:
        return json.load(handle)


def _minutes(record):
    """Training and evaluation minutes; a run resumed across sessions says which part each
    counts (training: every session's, or for runs whose backups kept no time, the last
    session's epochs; evaluation: every unit's own seconds, those of the units an earlier
    session computed included, rather than the last process's wall)."""
    timings, e = record["timings"], record["evaluation"]
    train = f"{timings['train_seconds'] / 60:.1f}"
    resumed = timings.get("train_seconds_since_epoch", timings.get("resumed_after_epoch"))
    if resumed:
        last = len(record["history"])
        train += (f" (epoch {last})" if resumed + 1 == last
                  else f" (epochs {resumed + 1}-{last})")
    evaluate = f"{e['seconds']['total'] / 60:.1f}"
    report = _report(record)
    if report["units"]["reused"]:
        seconds = report["timings"]
        units = (seconds["total"] - seconds["ensemble"]
                 + sum(attack["seconds"] for attack in report["attacks"]))
        evaluate = (f"{units / 60:.1f} ({report['units']['reused']} of "
                    f"{report['units']['reused'] + report['units']['computed']} units resumed)")
    return [train, evaluate]


def _cells(record):
    e = record["evaluation"]
    failed = ", ".join(e["failed_checks"]) or "all pass"
    return [pct(record["pgd20"]["clean"]), pct(record["pgd20"]["pgd20"]), pct(e["clean"]),
            pct(e["autoattack"]), failed, *_minutes(record)]


HEADER = ["clean (10k)", "PGD-20 (10k)", "clean (500)", "AutoAttack (500)", "failed checks",
          "train min", "eval min"]


def _row(label, name, seed=0, extra=None):
    runs = load(name)
    width = len(HEADER) + (1 if extra else 0)
    if seed not in runs:
        return f"| {label} | " + " | ".join(["not run"] + [""] * (width - 1)) + " |"
    cells = _cells(runs[seed]) + ([extra(runs[seed])] if extra else [])
    return f"| {label} | " + " | ".join(cells) + " |"


def _table(first, rows, extra_header=None):
    header = HEADER + ([extra_header] if extra_header else [])
    lines = [f"| {first} | " + " | ".join(header) + " |", "|" + "---|" * (len(header) + 1)]
    return "\n".join(lines + rows)


def ablation_table():
    return _table("MNIST, seed 0", [_row(label, name) for label, name in ABLATION])


def _compactness(record):
    """Local compactness (training mean) after each epoch: how ADR's latent behaved."""
    values = [epoch.get("local_compactness") for epoch in record["history"]]
    if any(v is None for v in values):
        return "-"
    return ", ".join(f"{v:.3g}" for v in values)


def findings_table():
    return _table("MNIST, seed 0", [_row(label, name, extra=_compactness)
                                    for label, name in FINDINGS],
                  extra_header="local compactness, epochs 1-5")


def _spread(values):
    if not values:
        return "not run"
    mean = statistics.mean(values)
    if len(values) == 1:
        return f"{100 * mean:.1f} (1 seed)"
    return f"{100 * mean:.1f} ± {100 * statistics.stdev(values):.1f}"


def seeds_table(rows=SEEDS, dataset="MNIST", report_images=500):
    """Mean ± standard deviation over seeds, and each row's gap to the first, seed by seed."""
    sizes = {r["evaluation"]["examples"] for _, name in rows for r in load(name).values()}
    images = f"{sizes.pop() if len(sizes) == 1 else report_images:,}"
    lines = [f"| {dataset} | seeds | clean (10k) | PGD-20 (10k) | AutoAttack ({images}) "
             "| AutoAttack per seed |",
             "|---|---|---|---|---|---|"]
    for label, name in rows:
        runs = load(name)
        seeds = sorted(runs)
        clean = [runs[s]["pgd20"]["clean"] for s in seeds]
        pgd = [runs[s]["pgd20"]["pgd20"] for s in seeds]
        aa = [runs[s]["evaluation"]["autoattack"] for s in seeds]
        per_seed = ", ".join(f"{pct(a)}" for a in aa) or "not run"
        lines.append(f"| {label} | {', '.join(map(str, seeds)) or '-'} | {_spread(clean)} | "
                     f"{_spread(pgd)} | {_spread(aa)} | {per_seed} |")
    base = load(rows[0][1])
    for label, name in rows[1:]:
        runs = load(name)
        seeds = sorted(set(runs) & set(base))

        def gaps(key):
            return [runs[s_][key[0]][key[1]] - base[s_][key[0]][key[1]] for s_ in seeds]

        clean, pgd = gaps(("pgd20", "clean")), gaps(("pgd20", "pgd20"))
        aa = gaps(("evaluation", "autoattack"))
        per_seed = ", ".join(f"{100 * a:+.1f}" for a in aa) or "not run"
        lines.append(f"| {label} minus {rows[0][0]}, same seed | "
                     f"{', '.join(map(str, seeds)) or '-'} | {_spread(clean)} | {_spread(pgd)} | "
                     f"{_spread(aa)} | {per_seed} |")
    return "\n".join(lines)


def paired(base, other, first=False):
    """Two reports on the same images, compared image by image.

    Returns the images robust under both, under `base` only and under `other` only, the
    robust-accuracy gap `other - base`, its paired standard error (of the mean of the
    per-image differences) and the exact two-sided McNemar p-value (a binomial test of the
    discordant images at one half). This is the noise of the image sample alone, for models
    fixed; the spread over seeds is the noise of training.

    With `first=True` two reports on the first N and the first M images of the same data and
    split (`tfrobust evaluate --limit`) are compared on the first min(N, M). Their data hashes
    cover different slices, so that the shorter slice is a prefix of the longer one is taken
    from `--limit` (it keeps the first images, in order), not checked.
    """
    keys = ("name", "split") if first else ("name", "split", "limit", "sha256")
    for key in keys:
        if base["data"][key] != other["data"][key]:
            raise ValueError(f"Expected two reports on the same images. Received: data {key} "
                             f"{base['data'][key]!r} and {other['data'][key]!r}")
    if first and None in (base["data"]["limit"], other["data"]["limit"]):
        raise ValueError("Expected two reports on the first images of a split (--limit) to "
                         "compare on the first of both. Received: data limit "
                         f"{base['data']['limit']!r} and {other['data']['limit']!r}")
    n = min(len(base["broken_by"]), len(other["broken_by"]))
    a = [outcome == "robust" for outcome in base["broken_by"][:n]]
    b = [outcome == "robust" for outcome in other["broken_by"][:n]]
    both = sum(x and y for x, y in zip(a, b))
    only_base = sum(x and not y for x, y in zip(a, b))
    only_other = sum(y and not x for x, y in zip(a, b))
    gap = (only_other - only_base) / n
    # Variance of the per-image differences (each -1, 0 or 1), over n - 1.
    variance = ((only_base + only_other) / n - gap * gap) * n / (n - 1)
    discordant = only_base + only_other
    tail = sum(math.comb(discordant, k) for k in range(min(only_base, only_other) + 1))
    p_value = min(1.0, 2 * tail / 2 ** discordant) if discordant else 1.0
    return {"images": n, "both": both, "only_base": only_base, "only_other": only_other,
            "gap": gap, "standard_error": math.sqrt(variance / n), "p_value": p_value}


def _paired_header(dataset, only_base, only_other):
    return [f"| {dataset}, the same report images | seed | images | robust under both | "
            f"only {only_base} | only {only_other} | AutoAttack gap | paired standard error | "
            "McNemar p |",
            "|---|---|---|---|---|---|---|---|---|"]


def _paired_rows(base, other, first=False):
    """One line per seed both rows ran, `other` against `base` (each a (label, name))."""
    (base_label, base_name), (label, name) = base, other
    base_runs, runs = load(base_name), load(name)
    seeds = sorted(set(runs) & set(base_runs))
    if not seeds:
        return [f"| {label} vs {base_label} | not run |" + " |" * 7]
    lines = []
    for seed in seeds:
        c = paired(_report(base_runs[seed]), _report(runs[seed]), first)
        lines.append(f"| {label} vs {base_label} | {seed} | {c['images']:,} | {c['both']} | "
                     f"{c['only_base']} | {c['only_other']} | {100 * c['gap']:+.1f} | "
                     f"{100 * c['standard_error']:.1f} | {c['p_value']:.2g} |")
    return lines


def paired_table(rows=SEEDS, dataset="MNIST"):
    """Each row against the first on the same report images, seed by seed."""
    lines = _paired_header(dataset, rows[0][0], "the other")
    for row in rows[1:]:
        lines += _paired_rows(rows[0], row)
    return "\n".join(lines)


def cifar_paired_table():
    return paired_table(CIFAR_SEEDS, "CIFAR-10")


def cifar_he_pairs_table():
    """FastAT and TRADES, each with HE against itself with the dense head, image by image."""
    lines = _paired_header("CIFAR-10", "the dense head", "HE")
    for base, other in CIFAR_HE_PAIRS:
        lines += _paired_rows(base, other)
    return "\n".join(lines)


def cifar_against_pgd_at_table():
    """TRADES, FastAT and ADR against PGD-AT of the same seed, on the first images of both
    reports (PGD-AT's report has 1,000, theirs 500)."""
    lines = _paired_header("CIFAR-10", "PGD-AT", "the other")
    for row in CIFAR_AGAINST_PGD_AT:
        lines += _paired_rows(CIFAR_SEEDS[0], row, first=True)
    return "\n".join(lines)


def cifar_seeds_table():
    return seeds_table(CIFAR_SEEDS, "CIFAR-10", 1000)


def cifar_frameworks_table():
    """Seed 0 of every CIFAR-10 row; the report's size differs by row (1,000 or 500)."""
    lines = ["| CIFAR-10, seed 0 | clean (10k) | PGD-20 (10k) | report images | clean (report) "
             "| AutoAttack (report) | failed checks | train min | eval min |",
             "|" + "---|" * 9]
    for label, name in CIFAR_FRAMEWORKS:
        record = load(name).get(0)
        if record is None:
            lines.append(f"| {label} | not run |" + " |" * 7)
            continue
        cells = _cells(record)
        cells.insert(2, f"{record['evaluation']['examples']:,}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _command(name, seeds, images):
    limit = "" if images == EVAL_LIMIT else f" --eval-limit {images}"
    return f"`python experiments/run.py {name} --seeds {' '.join(map(str, seeds))}{limit}`"


def headline_table():
    """README.md's results: every seed of the main rows, with the command that made them."""
    lines = ["| data | training | seeds | clean (10k) | PGD-20 (10k) | AutoAttack | "
             "AutoAttack per seed | report images | made by |", "|" + "---|" * 9]

    def spread(values):  # the seeds column says when there is one
        return pct(values[0]) if len(values) == 1 else _spread(values)

    for dataset, rows in (("MNIST", SEEDS), ("CIFAR-10", CIFAR_FRAMEWORKS)):
        for label, name in rows:
            runs = load(name)
            seeds = sorted(runs)
            if not seeds:
                lines.append(f"| {dataset} | {label} | not run |" + " |" * 6)
                continue
            images = {runs[s]["evaluation"]["examples"] for s in seeds}
            if len(images) != 1:
                raise SystemExit(f"tables.py: error: Expected every seed of {name} evaluated "
                                 f"on the same number of images. Received: {sorted(images)}")
            images = images.pop()
            aa = [runs[s]["evaluation"]["autoattack"] for s in seeds]
            cells = [spread([runs[s]["pgd20"][key] for s in seeds]) for key in ("clean", "pgd20")]
            cells += [spread(aa), ", ".join(pct(a) for a in aa)]
            lines.append(f"| {dataset} | {label} | {', '.join(map(str, seeds))} | "
                         + " | ".join(cells) + f" | {images:,} | {_command(name, seeds, images)} |")
    return "\n".join(lines)


def _script_results(script):
    """experiments/results/<script>.json, written by experiments/<script>.py; None if absent."""
    path = os.path.join(RESULTS, f"{script}.json")
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        return json.load(handle)


def short_runs_table():
    runs = _script_results("adr_short_runs")
    if runs is None:
        return "not run: python experiments/adr_short_runs.py"
    lines = ["| bundled sample, 237 updates | objective | initialisation | dropout | optimiser | "
             "clean (500) | PGD-10 (500) | local compactness | mean abs(latent) | zero share |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, result in runs["results"].items():
        variant = runs["variants"][name]
        compactness = result["local_compactness"]
        lines.append(
            f"| {name} | {variant['objective']} | {variant['initialization']} | "
            f"{variant['dropout']} | {variant['optimizer']} | {pct(result['clean'])} | "
            f"{pct(result['pgd10'])} | {'-' if compactness is None else f'{compactness:.3g}'} | "
            f"{result['latent_mean_abs']:.3g} | {result['latent_zero_share']:.2f} |")
    return "\n".join(lines)


def adr_scale_table():
    runs = _script_results("adr_scale")
    if runs is None:
        return "not run: python experiments/adr_scale.py"
    first = next(iter(runs["results"].values()))
    updates = [point["update"] for point in first["trajectory"]]
    shown = sorted({updates[0], updates[len(updates) // 2 - 1], updates[-1]})

    def number(value):
        return "-" if value is None else f"{value:.3g}"

    lines = [f"| bundled sample, {first['updates']} updates | initialisation | compactness on | "
             "clean (500) | PGD-10 (500) | "
             + " | ".join(f"mean abs(z) at {u}" for u in shown)
             + " | r at " + " | r at ".join(str(u) for u in shown) + " |",
             "|---|---|---|---|---|" + "---|" * (2 * len(shown))]
    for name, result in runs["results"].items():
        variant = runs["variants"][name]
        points = {point["update"]: point for point in result["trajectory"]}
        lines.append(
            f"| {name} | {variant['initialization']} | {variant['compactness']} | "
            f"{pct(result['clean'])} | {pct(result['pgd10'])} | "
            + " | ".join(number(points[u]["latent_mean_abs"]) for u in shown) + " | "
            + " | ".join("-" if points[u]["r"] is None else f"{points[u]['r']:+.2f}"
                         for u in shown) + " |")
    return "\n".join(lines)


TABLES = {"seeds": seeds_table, "ablation": ablation_table, "findings": findings_table,
          "short_runs": short_runs_table, "adr_scale": adr_scale_table,
          "cifar_seeds": cifar_seeds_table,
          "cifar_frameworks": cifar_frameworks_table, "paired": paired_table,
          "cifar_paired": cifar_paired_table, "cifar_he_pairs": cifar_he_pairs_table,
          "cifar_against_pgd_at": cifar_against_pgd_at_table,
          "headline": headline_table}
_BLOCK = re.compile(r"(<!-- table:(\w+) -->\n)(.*?)(<!-- end table -->)", re.S)


def render_readme(text, path=README):
    def replace(match):
        name = match.group(2)
        if name not in TABLES:
            raise SystemExit(f"tables.py: error: Expected a table name among {sorted(TABLES)}. "
                             f"Received: <!-- table:{name} --> in {path}")
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
    status = 0
    for path in (README, TOP_README):
        with open(path) as handle:
            text = handle.read()
        rendered = render_readme(text, path)
        shown = os.path.relpath(path, ROOT)
        if args.check:
            if rendered != text:
                print(f"{shown} tables differ from experiments/results; run "
                      "python experiments/tables.py --write", file=sys.stderr)
                status = 1
            else:
                print(f"{shown} tables match experiments/results")
        elif rendered != text:
            with open(path, "w") as handle:
                handle.write(rendered)
            print(f"updated {shown}")
    return status


if __name__ == "__main__":
    sys.exit(main())
