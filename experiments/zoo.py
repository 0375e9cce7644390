"""Write the pretrained zoo (`tfrobust/models/zoo_data/`) from committed experiment results.

    python experiments/zoo.py [--runs experiments/runs] [--check]

For each zoo entry below, the seed with the highest AutoAttack accuracy in its committed
results (`experiments/results/EXPERIMENT/seedS.json`; PGD-20 accuracy on the whole test split
breaks ties) is chosen, and its folder written:

- `model.keras`: the zoo's own copy if it already ships that seed (kept byte for byte, so an
  unchanged entry needs neither its run nor a new file in git), else the model of
  `RUNS/EXPERIMENT-seedS/model.keras` (where `experiments/run.py` trained it; models are not
  committed, but `experiments/carry.py` carries the finished CIFAR-10 ones in
  `experiments/carry/runs`), saved again without its optimizer state, which a user
  attacking or evaluating the model does not need (a third of the file for Adam's two
  moments, half for SGD's momentum), and computing in float32 if it was trained in mixed
  precision (the function its report evaluated, and fast on any CPU). Its weights must hash to the
  `weights_sha256` of the committed report: the shipped model is the one that was evaluated.
- `report.json`: the committed `seedS.report.json`, as it is.
- `config.json`: the run's `config.json` (what `tfrobust train` resolved and trained with),
  which `tfrobust evaluate` reads for the model card it writes.
- `model_card.json`: `tfrobust.evaluation.model_card` of that report and the run's
  `config.json` (what the run trained with), with `name` and `footnote` filled in.

and `index.json` lists them with the commands that made each. `--check` writes nothing and
exits 1 if the zoo differs from what the results say (another seed would now be chosen, a
number or command changed, a shipped card is not the one `model_card` now writes).
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "experiments", "results")
ZOO = os.path.join(ROOT, "tfrobust", "models", "zoo_data")

#: name, experiment, dataset, default evaluation data, description.
ENTRIES = (
    ("mnist-pgd-at", "mnist_pgd_at", "mnist", "mnist-sample",
     "small_cnn (TRADES' SmallCNN), PGD-AT with PGD-10 at L-inf 0.3, 5 epochs of full MNIST"),
    ("mnist-pgd-at-he", "mnist_pgd_at_he", "mnist", "mnist-sample",
     "small_cnn (TRADES' SmallCNN), PGD-AT+HE (s = 15, m = 0.2) with PGD-10 at L-inf 0.3, "
     "5 epochs of full MNIST"),
    ("cifar10-pgd-at", "cifar10_pgd_at", "cifar10", "cifar10-sample",
     "preact_resnet18 at base width 16 (701,018 parameters), PGD-AT with PGD-7 at L-inf 8/255, "
     "10 epochs of CIFAR-10"),
    ("cifar10-pgd-at-he", "cifar10_pgd_at_he", "cifar10", "cifar10-sample",
     "preact_resnet18 at base width 16 (701,018 parameters), PGD-AT+HE (s = 15, m = 0.2) with "
     "PGD-7 at L-inf 8/255, 10 epochs of CIFAR-10"),
)


def _results(experiment):
    folder = os.path.join(RESULTS, experiment)
    found = []
    for name in sorted(os.listdir(folder)):
        if name.startswith("seed") and name.endswith(".json") and ".report." not in name:
            with open(os.path.join(folder, name)) as handle:
                found.append(json.load(handle))
    if not found:
        raise SystemExit(f"zoo.py: error: no results in {os.path.relpath(folder, ROOT)}")
    return found


def choose(results):
    """The result with the highest AutoAttack accuracy; PGD-20 on the test split breaks ties."""
    return max(results, key=lambda r: (r["evaluation"]["autoattack"], r["pgd20"]["pgd20"],
                                       -r["seed"]))


def _selected_by(results):
    seeds = ", ".join(str(r["seed"]) for r in sorted(results, key=lambda r: r["seed"]))
    return (f"the highest AutoAttack accuracy of seeds {seeds} (PGD-20 on the whole test "
            "split breaks ties)")


def index_entry(name, experiment, dataset, data, description, result, results, size):
    return {
        "name": name, "description": description, "dataset": dataset, "data": data,
        "experiment": experiment, "seed": result["seed"], "selected_by": _selected_by(results),
        "commands": result["commands"],
        "test_accuracy": {"examples": result["pgd20"]["examples"],
                          "clean": round(result["pgd20"]["clean"], 4),
                          "pgd20": round(result["pgd20"]["pgd20"], 4)},
        "size_bytes": size,
    }


def _card(report, config, name, result):
    from tfrobust.evaluation.model_card import model_card
    from tfrobust.evaluation.report import EvaluationReport

    card = model_card(EvaluationReport.from_dict(report), config)
    card["name"] = f"tfrobust {name}"
    card["footnote"] = (f"tfrobust pretrained zoo: experiment {result['experiment']}, seed "
                        f"{result['seed']}; trained by `{result['commands'][0]}`")
    sources = card["sources"]
    sources.pop("link, name, authors, venue, reported, footnote")
    sources["name, footnote"] = "experiments/zoo.py: the zoo entry"
    sources["link, authors, venue, reported"] = "null: a tfrobust model, no paper's figure"
    return card


def _strip_optimizer(source, target):
    """`source` saved again as `target` without optimizer state; its weights' digest."""
    from tfrobust.models import load_model

    from tfrobust.evaluation import precision

    model = load_model(source, compile=False)
    if precision.computes_in(model) != "float32":
        # Trained in mixed precision: shipped as the float32 function its report evaluated.
        model = precision.lower_precision_copy(model, "float32")
    model.save(target)
    return _digest(target)


def _digest(path):
    """The `weights_sha256` a report records for the model saved at `path`."""
    from tfrobust.evaluation.inputs import resolve_model

    return resolve_model(path)[1]["weights_sha256"]


def _shipped(name):
    """The zoo's current index entry called `name`, or None."""
    try:
        with open(os.path.join(ZOO, "index.json")) as handle:
            items = json.load(handle)["models"]
    except FileNotFoundError:
        return None
    return next((item for item in items if item["name"] == name), None)


def _run_dir(runs, name, experiment, seed):
    """Where the chosen seed's `model.keras` and `config.json` are: the zoo's folder for
    `name` if the zoo already ships that experiment and seed (kept byte for byte: a rebuild
    changes nothing it need not), else its run directory under `runs`."""
    run_dir = os.path.join(runs, f"{experiment}-seed{seed}")
    shipped = _shipped(name)
    if shipped and (shipped["experiment"], shipped["seed"]) == (experiment, seed):
        return os.path.join(ZOO, name)
    if os.path.isfile(os.path.join(run_dir, "model.keras")):
        return run_dir
    raise SystemExit(f"zoo.py: error: {name} is {experiment} seed {seed}, whose model is "
                     f"neither in {os.path.relpath(run_dir, ROOT)} nor shipped in the zoo: "
                     "pass --runs the directory holding that run")


def build(runs, out_dir):
    """Write the zoo into `out_dir` from the results and the models under `runs`."""
    os.makedirs(out_dir, exist_ok=True)
    index = []
    for name, experiment, dataset, data, description in ENTRIES:
        results = _results(experiment)
        result = choose(results)
        run_dir = _run_dir(runs, name, experiment, result["seed"])
        with open(os.path.join(RESULTS, experiment, f"seed{result['seed']}.report.json")) as f:
            report = json.load(f)
        with open(os.path.join(run_dir, "config.json")) as handle:
            config = json.load(handle)
        folder = os.path.join(out_dir, name)
        os.makedirs(folder, exist_ok=True)
        if run_dir == os.path.join(ZOO, name):  # already stripped: kept byte for byte
            shutil.copyfile(os.path.join(run_dir, "model.keras"),
                            os.path.join(folder, "model.keras"))
            digest = _digest(os.path.join(folder, "model.keras"))
        else:
            digest = _strip_optimizer(os.path.join(run_dir, "model.keras"),
                                      os.path.join(folder, "model.keras"))
        if digest != report["model"]["weights_sha256"]:
            raise SystemExit(f"zoo.py: error: {run_dir}/model.keras is not the model its "
                             "committed report evaluated (weights_sha256 differs)")
        shutil.copyfile(os.path.join(run_dir, "config.json"), os.path.join(folder, "config.json"))
        with open(os.path.join(folder, "report.json"), "w") as handle:
            json.dump(report, handle, indent=2)
            handle.write("\n")
        with open(os.path.join(folder, "model_card.json"), "w") as handle:
            json.dump(_card(report, config, name, result), handle, indent=2)
            handle.write("\n")
        size = os.path.getsize(os.path.join(folder, "model.keras"))
        index.append(index_entry(name, experiment, dataset, data, description, result,
                                 results, size))
        print(f"{name}: {experiment} seed {result['seed']}, AutoAttack "
              f"{100 * result['evaluation']['autoattack']:.1f}% ({size / 1e6:.2f} MB)")
    with open(os.path.join(out_dir, "index.json"), "w") as handle:
        json.dump({"models": index}, handle, indent=2)
        handle.write("\n")


def check(zoo_dir=ZOO):
    """Differences between the zoo's index and cards and what the committed results give."""
    with open(os.path.join(zoo_dir, "index.json")) as handle:
        shipped = {item["name"]: item for item in json.load(handle)["models"]}
    problems = []
    for name, experiment, dataset, data, description in ENTRIES:
        results = _results(experiment)
        result = choose(results)
        if name not in shipped:
            problems.append(f"{name}: not in the zoo")
            continue
        expected = index_entry(name, experiment, dataset, data, description, result, results,
                               shipped[name]["size_bytes"])
        if expected != shipped[name]:
            problems.append(f"{name}: the zoo has {shipped[name]}, the results say {expected}")
            continue
        # The card as `tfrobust.evaluation.model_card` writes it today, from the shipped
        # report and config: a change there must reach the shipped cards.
        folder = os.path.join(zoo_dir, name)
        files = {}
        for file in ("report.json", "config.json", "model_card.json"):
            with open(os.path.join(folder, file)) as handle:
                files[file] = json.load(handle)
        card = _card(files["report.json"], files["config.json"], name, result)
        if card != files["model_card.json"]:
            changed = sorted(key for key in set(card) | set(files["model_card.json"])
                             if card.get(key) != files["model_card.json"].get(key))
            problems.append(f"{name}: the shipped model_card.json differs from the one its "
                            f"report and config give today in {changed}")
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default=os.path.join(ROOT, "experiments", "runs"),
                        help="where experiments/run.py trained the models")
    parser.add_argument("--check", action="store_true",
                        help="compare the zoo with the results instead of writing it")
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        print("\n".join(problems) or "the zoo is what the committed results choose")
        return 1 if problems else 0
    staging = tempfile.mkdtemp(prefix="zoo-", dir=os.path.dirname(ZOO))
    try:
        build(args.runs, staging)
        if os.path.isdir(ZOO):
            shutil.rmtree(ZOO)
        os.chmod(staging, 0o755)
        os.replace(staging, ZOO)
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging)
    return 0


if __name__ == "__main__":
    sys.exit(main())
