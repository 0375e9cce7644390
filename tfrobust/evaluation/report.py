"""`EvaluationReport`: what `tfrobust.evaluate` found, as JSON, a plot and a summary."""

import dataclasses
import json
import os

from tfrobust.evaluation.checks import Check
from tfrobust.utils.files import write_atomic

REPORT_FILE = "report.json"
PLOT_FILE = "report.png"


@dataclasses.dataclass
class EvaluationReport:
    """The result of `tfrobust.evaluate`.

    Attributes:
        model: the model's identity: name, class, parameter count, a SHA-256
            of its weights, and the file it came from (if any).
        data: the data's identity: name, split, number of examples, image
            shape and a SHA-256 of the images and labels.
        threat_model: `norm`, `epsilon`, `clip_min`, `clip_max`.
        clean_accuracy: accuracy on the clean inputs.
        robust_accuracy: accuracy under the per-example worst case over the
            ensemble's attacks, each run only on the points still robust.
        attacks: per ensemble member, in order: `name`, `config`,
            `attacked` (points it ran on), `broken` (points it broke first),
            `robust_accuracy_after` and `seconds`.
        broken_by: per example, the name of the attack that broke it first,
            `"robust"`, or `"misclassified"` (wrong already on the clean input).
        sweep: `epsilons` and `curves`, one per sweep attack: `name`,
            `config` (at the evaluation epsilon) and `accuracy` per epsilon.
        checks: the `Check`s, see `tfrobust.evaluation.checks`.
        check_attacks: the configs of the attacks the checks ran, by name.
        timings: wall-clock seconds per stage.
        units: `computed` and `reused` (from the cache of an interrupted run).
        provenance: package versions, commit and platform.
        precision: what the attacks computed in: `"float32"`, or `"mixed_bfloat16"`
            (a bfloat16 copy of the model; every break judged by the model itself).
    """

    model: dict
    data: dict
    threat_model: dict
    clean_accuracy: float
    robust_accuracy: float
    attacks: list
    broken_by: list
    sweep: dict
    checks: list
    check_attacks: dict
    timings: dict
    units: dict
    provenance: dict
    precision: str = "float32"

    @property
    def passed(self):
        """True if no check failed (skipped checks do not count)."""
        return all(check.passed is not False for check in self.checks)

    @property
    def failed_checks(self):
        return [check for check in self.checks if check.passed is False]

    def check(self, name):
        """The `Check` called `name`."""
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(f"Expected a check name among {[c.name for c in self.checks]}. "
                       f"Received: name={name!r}")

    # -- files ----------------------------------------------------------------------------
    def to_dict(self):
        out = dataclasses.asdict(self)
        out["checks"] = [dataclasses.asdict(c) for c in self.checks]
        out["passed"] = self.passed
        return out

    @classmethod
    def from_dict(cls, values):
        values = dict(values)
        values.pop("passed", None)
        values["checks"] = [Check(**c) for c in values["checks"]]
        return cls(**values)

    @classmethod
    def load(cls, path):
        """Read a report written by `save` (a `report.json` or its directory)."""
        if os.path.isdir(path):
            path = os.path.join(path, REPORT_FILE)
        with open(path) as handle:
            return cls.from_dict(json.load(handle))

    def save(self, directory, plot=True):
        """Write `directory/report.json`, `directory/model_card.json` and (with `plot`)
        `directory/report.png`.

        The model card holds the fields of a RobustBench model entry and where each
        comes from (`tfrobust.evaluation.model_card`). Each file is written to a
        temporary name and renamed into place, so a reader never sees half a report.

        Returns:
            The paths written.
        """
        os.makedirs(directory, exist_ok=True)
        paths = [_atomic_write(os.path.join(directory, REPORT_FILE),
                               lambda handle: json.dump(self.to_dict(), handle, indent=2),
                               mode="w")]
        from tfrobust.evaluation.model_card import MODEL_CARD_FILE, report_card

        card = report_card(self)
        paths.append(_atomic_write(os.path.join(directory, MODEL_CARD_FILE),
                                   lambda handle: json.dump(card, handle, indent=2), mode="w"))
        if plot:
            from tfrobust.evaluation.plot import plot_report

            figure = plot_report(self)
            paths.append(_atomic_write(os.path.join(directory, PLOT_FILE),
                                       lambda handle: figure.savefig(handle, format="png",
                                                                     dpi=120),
                                       mode="wb"))
            import matplotlib.pyplot as plt

            plt.close(figure)
        return paths

    # -- reading -------------------------------------------------------------------------
    def checks_line(self):
        """`"3 of 12 checks ran, all passed"`, or which failed.

        A check that was enabled but had nothing to judge (e.g. the sweep
        checks without sweep attacks) did not run.
        """
        from tfrobust.evaluation import suite

        ran = sum(c.passed is not None for c in self.checks)
        failed = [c.name for c in self.failed_checks]
        head = f"{ran} of {len(suite.names())} checks ran"
        if not ran:
            return head
        if failed:
            return f"{head}, {len(failed)} FAILED: {', '.join(failed)}"
        return f"{head}, all passed"

    def summary(self):
        """A readable summary for the terminal."""
        threat = self.threat_model
        lines = [
            f"Model {self.model.get('name')} ({self.model.get('class')}, "
            f"{self.model.get('parameters', 0):,} parameters) on {self.data.get('name')} "
            f"{self.data.get('split') or ''} ({self.data['num_examples']} examples), "
            f"{threat['norm']} epsilon {threat['epsilon']:g}",
            f"  clean accuracy   {100 * self.clean_accuracy:6.2f}%",
            f"  robust accuracy  {100 * self.robust_accuracy:6.2f}%  (worst case over "
            f"{len(self.attacks)} attack{'s' if len(self.attacks) != 1 else ''})",
        ]
        if self.precision != "float32":
            lines.append(f"  the attacks computed in {self.precision}; every break was judged "
                         "by the model itself")
        lines.extend(self.sample_notes())
        for attack in self.attacks:
            lines.append(f"    after {attack['name']:<14} "
                         f"{100 * attack['robust_accuracy_after']:6.2f}%"
                         f"  broke {attack['broken']:>5} of {attack['attacked']:>5}  "
                         f"{attack['seconds']:7.1f} s")
        epsilons = self.sweep.get("epsilons", [])
        if epsilons:
            lines.append("  epsilon sweep    " + " ".join(f"{e:>7.4g}" for e in epsilons))
            for curve in self.sweep["curves"]:
                lines.append(f"    {curve['name']:<14} " + " ".join(
                    f"{100 * a:6.1f}%" for a in curve["accuracy"]))
        lines.append(f"  checks: {self.checks_line()}"
                     + (": the robust accuracy above may be overestimated"
                        if self.failed_checks else ""))
        for check in self.checks:
            lines.append(f"    {check.status}  {check.name:<20} {check.summary}")
            if check.passed is False:
                lines.append(f"          {check.meaning}")
        return "\n".join(lines)

    def sample_notes(self):
        """Plain words for what a small sample can and cannot say (lines of the summary)."""
        count = int(self.data["num_examples"])
        notes = []
        if count and self.clean_accuracy == 0:
            notes.append("  note: no example was classified correctly, so no attack ran "
                         "(\"broke 0 of 0\")")
        if 0 < count < 100:
            error = 100 * (0.25 / count) ** 0.5
            notes.append(f"  note: only {count} example{'s' if count != 1 else ''}: each one is "
                         f"{100 / count:.3g} points of accuracy, and an accuracy near 50% has a "
                         f"standard error of {error:.2g} points; evaluate 100 or more for an "
                         "estimate")
        return notes

    def __str__(self):
        return self.summary()


def _atomic_write(path, write, mode):
    """`write(handle)` of a file opened in `mode`, written whole (`utils.files.write_atomic`)."""
    def write_file(temporary):
        with open(temporary, mode) as handle:
            write(handle)

    return write_atomic(path, write_file)
