"""Run configuration: defaults and config files (TOML or JSON)."""

import json
import os
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


def read_config_file(path):
    """Read a `.toml` or `.json` file into a flat dict of option names to values."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Expected an existing config file. Received: --config {path!r}")
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in (".toml", ".json"):
        raise ValueError(f"Expected a .toml or .json config file. Received: --config {path!r}")
    with open(path, "rb") as handle:
        try:
            data = tomllib.load(handle) if suffix == ".toml" else json.load(handle)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"Expected a valid {suffix[1:].upper()} file. Received: --config "
                             f"{path!r}, which does not parse: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"Expected a table of options in {path}. Received: {type(data).__name__}")
    return {key.replace("-", "_"): value for key, value in data.items()}


def resolve(defaults, file_values, cli_values):
    """Merge defaults < config file < explicit command-line flags.

    Raises ValueError naming unknown keys of the config file.
    """
    unknown = sorted(set(file_values) - set(defaults))
    if unknown:
        raise ValueError(
            f"Expected config keys among {sorted(defaults)}. Received unknown keys: {unknown}"
        )
    resolved = dict(defaults)
    resolved.update(file_values)
    resolved.update({k: v for k, v in cli_values.items() if v is not None})
    return resolved


def check_section(name, table, allowed):
    """A table of the config file (`[name]` in TOML): its keys must be among `allowed`.

    Returns the table with `-` in keys read as `_` (`None` gives `{}`); raises
    ValueError naming unknown keys, as `resolve` does for the top level.
    """
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise ValueError(f"Expected [{name}] to be a table of options. Received: "
                         f"{name}={table!r}")
    table = {str(key).replace("-", "_"): value for key, value in table.items()}
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ValueError(f"Expected [{name}] keys among {sorted(allowed)}. Received unknown "
                         f"keys: {unknown}")
    return table
