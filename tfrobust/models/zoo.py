"""Pretrained robust models shipped inside the package: `pretrained(name)` loads one offline.

Each model of the zoo is a folder of `tfrobust/models/zoo_data/` holding `model.keras` (the trained
`RobustModel` without its optimizer state), `report.json` (the full `tfrobust evaluate` report
it was chosen by), `model_card.json` (the RobustBench fields of that report) and `config.json`
(what `tfrobust train` trained it with), listed in
`zoo_data/index.json` with the commands that trained and evaluated it, the experiment and seed it
came from, how it was chosen among the seeds, and its accuracy on all 10,000 test images.
`experiments/zoo.py` writes the folder from committed experiment results.

Example:

>>> import tfrobust
>>> [entry.name for entry in tfrobust.models.pretrained()]  # doctest: +SKIP
['mnist-pgd-at', 'mnist-pgd-at-he', 'cifar10-pgd-at', 'cifar10-pgd-at-he']
>>> model = tfrobust.models.pretrained("mnist-pgd-at")  # doctest: +SKIP
>>> tfrobust.evaluate(model, "mnist-sample", limit=100, attacks="pgd")  # doctest: +SKIP
"""

import dataclasses
import json
import os

#: Where the zoo lives inside the package.
ZOO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "zoo_data")
INDEX_FILE = "index.json"
MODEL_FILE = "model.keras"
REPORT_FILE = "report.json"
CARD_FILE = "model_card.json"
#: The prefix that names a zoo model where a `.keras` path is expected (`tfrobust evaluate`).
PREFIX = "pretrained:"


@dataclasses.dataclass(frozen=True)
class PretrainedEntry:
    """One model of the zoo: what it is, where its files are, and how it was made.

    Attributes:
        name: the name `pretrained(name)` takes, e.g. `"mnist-pgd-at"`.
        description: one line on the network, the training and the threat model.
        dataset: the dataset it was trained on (`"mnist"`, `"cifar10"`).
        data: the data `tfrobust evaluate pretrained:NAME` attacks by default, offline
            (`"mnist-sample"`: the first 2,000 MNIST test images, bundled).
        directory: the folder holding `model.keras`, `report.json`, `model_card.json` and
            `config.json`.
        experiment, seed: the experiment (`experiments/configs/EXPERIMENT.toml`) and seed it is.
        selected_by: how this seed was chosen among the experiment's seeds.
        commands: the commands that trained and evaluated it, from the repository root.
        test_accuracy: `{"examples", "clean", "pgd20"}` on the whole test split.
        size_bytes: the size of `model.keras`.
    """

    name: str
    description: str
    dataset: str
    data: str
    directory: str
    experiment: str
    seed: int
    selected_by: str
    commands: tuple
    test_accuracy: dict
    size_bytes: int

    @property
    def model_file(self):
        return os.path.join(self.directory, MODEL_FILE)

    @property
    def report_file(self):
        return os.path.join(self.directory, REPORT_FILE)

    @property
    def card(self):
        """The model card (a dict: RobustBench's fields and where each came from)."""
        with open(os.path.join(self.directory, CARD_FILE)) as handle:
            return json.load(handle)

    @property
    def report(self):
        """The evaluation report it was chosen by (`tfrobust.evaluation.EvaluationReport`)."""
        from tfrobust.evaluation.report import EvaluationReport

        return EvaluationReport.load(self.report_file)

    def __str__(self):
        card = self.card
        robust = card.get("autoattack_acc") or card.get("robust_acc")
        return (f"{self.name}: {self.description}; clean {card['clean_acc']}%, AutoAttack "
                f"{robust}% at {card['threat_model']} {card['eps']} on the first "
                f"{card['n_examples']} test images ({self.size_bytes / 1e6:.1f} MB)")


def _index(zoo_dir=None):
    zoo_dir = zoo_dir or ZOO_DIR
    with open(os.path.join(zoo_dir, INDEX_FILE)) as handle:
        items = json.load(handle)["models"]
    return [PretrainedEntry(directory=os.path.join(zoo_dir, item["name"]),
                            commands=tuple(item["commands"]),
                            **{key: value for key, value in item.items() if key != "commands"})
            for item in items]


def entry(name):
    """The `PretrainedEntry` called `name`; ValueError naming the choices otherwise."""
    entries = {item.name: item for item in _index()}
    if name not in entries:
        raise ValueError(f"Expected name to be one of {sorted(entries)}. Received: name={name!r}")
    return entries[name]


def pretrained(name=None):
    """A pretrained robust model of the zoo, loaded offline; without `name`, the list of them.

    The models were trained and evaluated by `experiments/run.py` (the entry's `commands`);
    each is the best of its experiment's seeds (`selected_by`). They come back uncompiled, as
    they are shipped without optimizer state: attack and evaluate them as they are, and
    `compile` one (for example with `keras.optimizers.Adam(1e-4)`) to fine-tune it.

    Args:
        name: a zoo name (`pretrained()` lists them), or None.

    Returns:
        The `RobustModel` called `name`, or, without a name, the list of `PretrainedEntry`.

    Raises:
        ValueError: `name` is not in the zoo (the message lists the names).
    """
    if name is None:
        return _index()
    from tfrobust.models.loading import load_model

    return load_model(entry(name).model_file)


def resolve_path(model):
    """The `.keras` path of `model`, a path or `pretrained:NAME`, and the entry or None."""
    if isinstance(model, str) and model.startswith(PREFIX):
        found = entry(model[len(PREFIX):])
        return found.model_file, found
    return model, None
