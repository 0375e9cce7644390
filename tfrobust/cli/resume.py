"""What lets `tfrobust train` resume after a crash: the backup's options, artefacts
written whole.

The backup itself is `tfrobust.backup.BackupAndRestore` (and the shuffle order
`tfrobust.backup.skip_epochs`); this module holds the command line's side of it.
"""

import json
import os

from tfrobust.utils.files import write_atomic

OPTIONS_FILE = "options.json"
CHIEF_BACKUP = "backup"
# Options a resumed run may change: where it writes, and how long it trains.
MAY_CHANGE = ("output", "overwrite", "epochs", "backup_every")


def backup_dir(output, task):
    """Where this process backs up: `OUTPUT/backup` for the chief, a directory per other worker."""
    if task.is_chief:
        return os.path.join(output, CHIEF_BACKUP)
    return os.path.join(output, f"backup-{task.type}-{task.index}")


def restore_dir(output, task):
    """Where this process resumes from: the chief's backup for every worker that can see it
    (so all resume from the same step, even when a kill fell between two workers' backups),
    else its own (workers without a shared output directory)."""
    from tfrobust.backup import read_state

    chief = os.path.join(output, CHIEF_BACKUP)
    if not task.is_chief and read_state(chief) is not None:
        return chief
    return backup_dir(output, task)


def parse_backup_every(value):
    """`"epoch"` (or None) or a whole number of batches >= 1, from a flag or a config file."""
    if value is None or value == "epoch":
        return "epoch"
    try:
        if isinstance(value, bool):
            raise ValueError
        steps = int(value)
        if steps != float(value) or steps < 1:
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise ValueError("Expected backup_every to be 'epoch' or a number of batches >= 1. "
                         f"Received: backup_every={value!r}") from None
    return steps


def _normal(value):
    return json.loads(json.dumps(value, default=str))


def check_options(directory, options):
    """Refuse to resume a backup made with other options (other than `MAY_CHANGE`)."""
    path = os.path.join(directory, OPTIONS_FILE)
    if not os.path.isfile(path):
        return
    with open(path) as handle:
        saved = json.load(handle)
    differing = [key for key in options if key not in MAY_CHANGE
                 and _normal(options[key]) != saved.get(key)]
    if differing:
        received = ", ".join(f"{k}={options[k]!r} (the backup has {saved.get(k)!r})"
                             for k in differing)
        raise ValueError(
            f"Expected the options of the interrupted run backed up in {directory!r}. "
            f"Received: {received}. Run it again with its options, or delete {directory!r} "
            "to start over.")


def write_options(directory, options):
    os.makedirs(directory, exist_ok=True)

    def write(path):
        with open(path, "w") as handle:
            json.dump(_normal(options), handle, indent=2)

    write_atomic(os.path.join(directory, OPTIONS_FILE), write)
