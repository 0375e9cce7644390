"""A model card beside the report: the fields of a RobustBench model entry, and their sources.

RobustBench keeps one JSON file per leaderboard row (`model_info/<dataset>/<threat>/<Name>.json`)
with `link`, `name`, `authors`, `additional_data`, `number_forward_passes`, `dataset`,
`venue`, `architecture`, `eps`, `clean_acc`, `reported`, `autoattack_acc`, and on newer rows
`footnote` and `unreliable`. `model_card` fills what an evaluation knows, leaves the rest
`null` for the user (a paper's link, title, authors, venue and reported figure), and adds
`threat_model` and `n_examples`, which RobustBench keeps in the directory name and in its
fixed protocol (the first 10,000 test images for CIFAR-10; a leaderboard row is comparable
only at that size). `sources` says where each field comes from.

Differences from a RobustBench row, by design:
- `autoattack_acc` is filled only when the ensemble was AutoAttack's standard one (APGD-CE,
  APGD-T, FAB-T and Square-5000 at the report's epsilon); otherwise it is `null` and
  `robust_acc` holds the worst case over the attacks that ran, named in `attacks`.
- `unreliable` is true when a tfrobust check failed (RobustBench sets it by hand, when an
  evaluation is known to be unreliable).
"""

import json
import os

MODEL_CARD_FILE = "model_card.json"
_BY_HAND = "not known to the evaluation: fill in by hand"


def model_card(report, training_config=None):
    """The card of `report`, a dict ready for `json.dump`.

    Args:
        report: an `EvaluationReport`.
        training_config: the `config.json` that `tfrobust train` wrote beside the model
            (a dict), or None; `report_card` reads it itself when the model came from a
            file with one beside it.
    """
    threat = report.threat_model
    options = (training_config or {}).get("options", {})
    card = {
        "link": None, "name": None, "authors": None, "venue": None, "reported": None,
        "additional_data": False if training_config else None,
        "number_forward_passes": 1 if report.model.get("class") == "RobustModel" else None,
        "dataset": _dataset_name(report.data.get("name")),
        "architecture": _architecture(report.model, options),
        "threat_model": {"linf": "Linf", "l2": "L2"}[threat["norm"]],
        "eps": _epsilon_text(threat),
        "n_examples": report.data.get("num_examples"),
        "clean_acc": f"{100 * report.clean_accuracy:.2f}",
        "robust_acc": f"{100 * report.robust_accuracy:.2f}",
        "autoattack_acc": (f"{100 * report.robust_accuracy:.2f}"
                           if is_standard_autoattack(report) else None),
        "attacks": [attack["name"] for attack in report.attacks],
        "precision": report.precision,
        "unreliable": not report.passed,
        "footnote": None,
    }
    sources = {
        "link, name, authors, venue, reported, footnote": _BY_HAND,
        "additional_data": ("false: tfrobust train used the one dataset in its config.json"
                            if training_config else _BY_HAND),
        "number_forward_passes": ("1: a RobustModel's prediction is one deterministic pass"
                                  if card["number_forward_passes"] else _BY_HAND),
        "dataset": "report.json data.name (file name without its extension)",
        "architecture": ("config.json options.model (with depth and width for wide_resnet, "
                         "base_width for a narrowed preact_resnet18)"
                         if options.get("model") else "report.json model.name"),
        "threat_model, eps": "report.json threat_model (eps as k/255 when it is one)",
        "n_examples": "report.json data.num_examples (RobustBench rows use 10,000)",
        "clean_acc": "report.json clean_accuracy, in percent",
        "robust_acc": "report.json robust_accuracy: the per-example worst case of `attacks`",
        "autoattack_acc": ("robust_acc: the ensemble was standard AutoAttack"
                           if card["autoattack_acc"] else
                           "null: the ensemble was not standard AutoAttack in float32 (see "
                           "attacks and precision)"),
        "precision": ("report.json precision: what the attacks computed in (tfrobust's; "
                      "breaks are always judged by the model itself)"),
        "unreliable": "true when a tfrobust check failed (report.json checks)",
    }
    return {**card, "sources": sources}


def report_card(report):
    """`model_card(report)`, with the training `config.json` beside the model file if any."""
    training_config = None
    model_file = report.model.get("file")
    if model_file:
        path = os.path.join(os.path.dirname(model_file), "config.json")
        try:
            with open(path) as handle:
                training_config = json.load(handle)
        except (OSError, ValueError):
            training_config = None
    return model_card(report, training_config)


def is_standard_autoattack(report):
    """Whether the ensemble was `AutoAttack(epsilon, norm)`'s standard members, in order,
    computing in float32."""
    from tfrobust import attacks

    if getattr(report, "precision", "float32") != "float32":
        return False
    threat = report.threat_model
    try:
        standard = attacks.AutoAttack(epsilon=threat["epsilon"], norm=threat["norm"],
                                      clip_min=threat["clip_min"], clip_max=threat["clip_max"])
    except (ValueError, TypeError):
        return False
    try:  # through the classes, so that configs of earlier versions read as today's
        ran = [attacks.serialize(attacks.get(attack["config"])) for attack in report.attacks]
    except (ValueError, TypeError, KeyError):
        return False
    expected = [attacks.serialize(member) for member in standard.attacks]
    return len(ran) == len(expected) and all(
        _comparable(a) == _comparable(b) for a, b in zip(ran, expected))


def _comparable(config):
    """An attack's serialized config without what does not change the attack (seed, XLA)."""
    inner = {k: v for k, v in config["config"].items() if k not in ("seed", "jit_compile")}
    return config["class_name"], json.dumps(inner, sort_keys=True)


def _dataset_name(name):
    if not name:
        return None
    return os.path.splitext(os.path.basename(str(name)))[0].lower()


def _architecture(model, options):
    backbone = options.get("model")
    if backbone == "wide_resnet":
        return f"WideResNet-{options.get('depth') or 34}-{options.get('width') or 10}"
    if backbone == "preact_resnet18" and options.get("base_width") not in (None, 64):
        return f"PreActResNet-18 (base width {options['base_width']})"
    return backbone or model.get("name")


def _epsilon_text(threat):
    """`"0.3"`, or `"8/255"` for a budget of whole 8-bit levels with no short decimal."""
    epsilon = threat["epsilon"]
    decimal = f"{epsilon:g}"
    span = threat["clip_max"] - threat["clip_min"]
    steps = epsilon * 255 / span if span else 0.0
    if (len(decimal) > 5 and threat["norm"] == "linf" and steps
            and abs(steps - round(steps)) < 1e-6):
        return f"{round(steps)}/255"
    return decimal
