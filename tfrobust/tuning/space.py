"""The search space of robust training: what a `RobustHyperModel` can vary, and its ranges.

Each entry is one knob of `tfrobust train` (the framework, its weight beta, the
ADR weights, the head with its scale and margin, the learning rate) with a
default range taken from the reference settings (SPEC sections 2 to 4). Entries
that only mean something for some values of another entry (the margin for a
hypersphere head, beta for TRADES) are declared inside keras-tuner conditional
scopes, so a trial carries only the values it uses.
"""

import contextlib
import dataclasses
import numbers

from tfrobust import objectives, recipe
from tfrobust.utils import validation


@dataclasses.dataclass(frozen=True)
class Entry:
    """One hyperparameter of the space.

    Attributes:
        name: the keras-tuner name, also the key of `fixed=` and `search=`.
        kind: `"choice"`, `"boolean"`, `"float"` or `"int"`.
        values: the default choices, or the default `(min, max)` range.
        default: the value a trial starts from and a fixed entry takes.
        allowed: every value a choice may take (choices only).
        sampling: `"linear"` or `"log"` (numbers only).
        minimum: the smallest value that makes sense (numbers only).
        strict: whether `minimum` itself is excluded.
        parent: `(name, values)`: the entry is used only when `name` takes one of `values`.
        help: what the entry does, for error messages and documentation.
    """

    name: str
    kind: str
    values: tuple
    default: object
    allowed: tuple = ()
    sampling: str = "linear"
    minimum: float = 0.0
    strict: bool = False
    parent: tuple = None
    help: str = ""


#: The methods a default search compares.
DEFAULT_METHODS = ("pgd-at", "trades", "alp")


def entries():
    """The space's entries in declaration order, from the objectives registered now.

    The method's choices are the registered methods (`tfrobust.recipe.methods()`); each
    method's `hyperparameters` are entries active when it is chosen (under their
    `tuning_name`); the ADR entries follow the regularisers' short names.
    """
    methods = recipe.methods()
    table = [Entry("method", "choice", tuple(m for m in DEFAULT_METHODS if m in methods),
                   recipe.MODEL_DEFAULTS["method"], allowed=methods, help="training framework")]
    for method in methods:
        for h in objectives.get_class(method).hyperparameters:
            table.append(Entry(h.key, h.kind, h.search or (h.default, h.default), h.default,
                               sampling=h.sampling, minimum=h.minimum, strict=h.strict,
                               parent=("method", (method,)), help=h.help))
    table.append(Entry("adr", "boolean", (False, True), False, allowed=(False, True),
                       parent=("method", objectives.adr.BASES), help="add the ADR regularisers"))
    reference = objectives.regularizers.reference_weights()
    for key, name in objectives.regularizers.short_names().items():
        table.append(Entry(f"adr_{key}", "float", (0.0, 1.0) if reference[key] == 0 else (0.0, 2.0),
                           reference[key], parent=("adr", (True,)),
                           help=f"ADR weight of {name}"))
    table += [
        Entry("head", "choice", recipe.HEADS, recipe.MODEL_DEFAULTS["head"],
              allowed=recipe.HEADS, help="classification head"),
        Entry("scale", "float", (5.0, 30.0), 15.0, strict=True,
              parent=("head", ("hypersphere",)), help="HE scale s"),
        Entry("margin", "float", (0.0, 0.4), 0.2, parent=("head", ("hypersphere",)),
              help="HE margin m"),
        Entry("learning_rate", "float", (1e-4, 1e-2), recipe.LEARNING_RATES["adam"],
              sampling="log", strict=True, help="Adam learning rate"),
    ]
    names = [entry.name for entry in table]
    if len(set(names)) != len(names):
        raise ValueError(f"Expected distinct tuning names. Received: {names} (give clashing "
                         "hyperparameters a tuning_name)")
    return tuple(table)


def entries_by_name():
    """`{name: Entry}` of `entries()`."""
    return {entry.name: entry for entry in entries()}


_SPEC_KEYS = {"min", "max", "sampling", "step", "values"}


@dataclasses.dataclass(frozen=True)
class Spec:
    """How one entry is searched in a given space: fixed, a list of choices or a range."""

    entry: Entry
    fixed: bool
    values: tuple            # the fixed value as a 1-tuple, the choices, or (min, max)
    default: object
    is_range: bool = False
    sampling: str = "linear"
    step: object = None

    @property
    def searched(self):
        """Whether trials can differ in this entry."""
        if self.fixed:
            return False
        if self.is_range:
            return self.values[0] < self.values[1]
        return len(self.values) > 1

    def possible(self):
        """The values the entry can take (None for a range: any number in it)."""
        return None if self.is_range else tuple(self.values)


def resolve(fixed=None, search=None, search_defaults=True):
    """The reachable space: a `Spec` for every entry some trial can use, in declaration order.

    Args:
        fixed: `{name: value}`: entries to hold at one value.
        search: `{name: choices or range}`: entries to search over other
            values than the defaults. A choice entry takes a list of values;
            a number takes `[min, max]` or `{"min", "max", "sampling", "step"}`,
            or `{"values": [...]}` for explicit choices.
        search_defaults: whether entries named in neither dict are searched
            over their default ranges (True) or fixed at their defaults (False).

    Raises:
        ValueError: unknown names, bad values, an entry that no trial can use
            (the scale with a fixed dense head), or nothing left to search.
    """
    fixed = dict(fixed or {})
    search = dict(search or {})
    space = entries()
    known = [entry.name for entry in space]
    for label, table in (("fixed", fixed), ("search", search)):
        unknown = sorted(set(table) - set(known))
        if unknown:
            raise ValueError(f"Expected {label} keys among {known}. Received unknown "
                             f"keys: {unknown}")
    both = sorted(set(fixed) & set(search))
    if both:
        raise ValueError(f"Expected each hyperparameter either fixed or searched. Received: "
                         f"{both} in both fixed and search")
    specs = {}
    for entry in space:
        default = _default(entry, specs)
        if entry.name in fixed:
            value = _check_value(entry, fixed[entry.name])
            spec = Spec(entry, True, (value,), value)
        elif entry.name in search:
            spec = _searched(entry, search[entry.name], default)
        elif search_defaults:
            numeric = entry.kind in ("float", "int")
            if numeric:
                default = min(max(default, entry.values[0]), entry.values[1])
            spec = Spec(entry, False, entry.values, default, numeric, entry.sampling)
        else:
            spec = Spec(entry, True, (default,), default)
        if entry.parent is not None and _active_values(entry, specs) is None:
            if entry.name in fixed or entry.name in search:
                parent, values = entry.parent
                raise ValueError(
                    f"Expected {entry.name} ({entry.help}) only when {parent} can be one of "
                    f"{list(values)}. Received: {parent} limited to "
                    f"{_describe(specs.get(parent))}")
            continue
        specs[entry.name] = spec
    if not any(spec.searched for spec in specs.values()):
        raise ValueError(
            "Expected at least one hyperparameter to search. Received an empty search space: "
            f"fixed={fixed!r}, search={search!r}, search_defaults={search_defaults!r} leave "
            f"every reachable hyperparameter ({list(specs)}) at one value.")
    return list(specs.values())


def _default(entry, specs):
    """The entry's default; the HE scale and margin follow the method when it is known."""
    method = specs.get("method")
    if entry.name in ("scale", "margin") and method is not None and len(method.values) == 1:
        he_defaults = recipe.objective_class(method.values[0]).he_defaults
        return he_defaults[0 if entry.name == "scale" else 1]
    return entry.default


def _describe(spec):
    if spec is None:
        return "nothing (it is not used either)"
    return repr(list(spec.possible()) if spec.possible() is not None else spec.values)


def _active_values(entry, specs):
    """The parent's values that make `entry` active, or None if the parent never takes one."""
    parent, values = entry.parent
    spec = specs.get(parent)
    if spec is None:
        return None
    active = [v for v in spec.possible() if v in values]
    return active or None


def _check_value(entry, value):
    """One value of `entry`: a listed choice, or a number at or above its minimum."""
    if entry.kind in ("choice", "boolean"):
        if entry.kind == "boolean" and not isinstance(value, bool):
            raise TypeError(f"Expected {entry.name} to be True or False. Received: "
                            f"{entry.name}={value!r}")
        return validation.check_choice(entry.name, value, entry.allowed)
    number = validation.check_number(entry.name, value, entry.minimum,
                                     integer=entry.kind == "int", strict_minimum=entry.strict)
    return number


def _searched(entry, given, default):
    """The `Spec` of an entry given in `search=`."""
    name = entry.name
    if entry.kind in ("choice", "boolean"):
        if isinstance(given, (str, bool)) or not isinstance(given, (list, tuple)) or not given:
            raise ValueError(f"Expected search[{name!r}] to be a non-empty list of values among "
                             f"{list(entry.allowed)}. Received: {name}={given!r}")
        values = tuple(_check_value(entry, v) for v in given)
        if len(set(values)) != len(values):
            raise ValueError(f"Expected distinct values. Received: {name}={given!r}")
        return Spec(entry, False, values, default if default in values else values[0])
    sampling, step = entry.sampling, None
    if isinstance(given, dict):
        unknown = sorted(set(given) - _SPEC_KEYS)
        if unknown:
            raise ValueError(f"Expected search[{name!r}] keys among {sorted(_SPEC_KEYS)}. "
                             f"Received unknown keys: {unknown}")
        if "values" in given:
            if set(given) != {"values"}:
                raise ValueError(f"Expected either values or min/max for {name}. Received: "
                                 f"{name}={given!r}")
            values = given["values"]
            if not isinstance(values, (list, tuple)) or not values:
                raise ValueError(f"Expected a non-empty list of values. Received: "
                                 f"{name}={given!r}")
            values = tuple(_check_value(entry, v) for v in values)
            return Spec(entry, False, values, default if default in values else values[0])
        if "min" not in given or "max" not in given:
            raise ValueError(f"Expected min and max for {name}. Received: {name}={given!r}")
        low, high = given["min"], given["max"]
        sampling = given.get("sampling", "linear")
        step = given.get("step")
    elif isinstance(given, (list, tuple)) and len(given) == 2 and all(
            isinstance(v, numbers.Real) for v in given):
        low, high = given
    else:
        raise ValueError(f"Expected search[{name!r}] as [min, max] or a table with min and max "
                         f"(or values). Received: {name}={given!r}")
    low, high = _check_value(entry, low), _check_value(entry, high)
    if low > high:
        raise ValueError(f"Expected min <= max for {name}. Received: {name}={given!r}")
    validation.check_choice("sampling", sampling, ("linear", "log"))
    if sampling == "log" and low <= 0:
        raise ValueError(f"Expected min > 0 for log sampling of {name}. Received: "
                         f"{name}={given!r}")
    if step is not None:
        step = validation.check_number("step", step, 0.0, strict_minimum=True,
                                       integer=entry.kind == "int")
    return Spec(entry, False, (low, high), min(max(default, low), high), True, sampling, step)


def declare(hp, specs):
    """Declare `specs` on keras-tuner `HyperParameters`; returns `{name: value or None}`.

    Inactive entries (beta when the method is PGD-AT) give None. Entries whose
    parents are conditional are declared inside every ancestor's scope, as
    keras-tuner requires for nested conditions.
    """
    by_name = {spec.entry.name: spec for spec in specs}
    values = {}
    for spec in specs:
        with contextlib.ExitStack() as scopes:
            for parent, active in _ancestors(spec.entry, by_name):
                scopes.enter_context(hp.conditional_scope(parent, active))
            values[spec.entry.name] = _declare_one(hp, spec)
    return values


def _ancestors(entry, by_name):
    """`[(parent, active parent values), ...]` from the root down to `entry`'s parent."""
    chain = []
    while entry.parent is not None:
        parent, wanted = entry.parent
        active = [v for v in by_name[parent].possible() if v in wanted]
        chain.append((parent, active))
        entry = by_name[parent].entry
    return chain[::-1]


def _declare_one(hp, spec):
    entry = spec.entry
    if spec.fixed:
        return hp.Fixed(entry.name, spec.values[0])
    if entry.kind == "boolean" and len(spec.values) == 2:
        return hp.Boolean(entry.name, default=spec.default)
    if not spec.is_range:
        return hp.Choice(entry.name, list(spec.values), default=spec.default)
    low, high = spec.values
    if entry.kind == "int":
        return hp.Int(entry.name, int(low), int(high), step=spec.step, sampling=spec.sampling,
                      default=int(spec.default))
    if low == high:
        return hp.Fixed(entry.name, low)
    return hp.Float(entry.name, float(low), float(high), step=spec.step,
                    sampling=spec.sampling, default=float(spec.default))


def describe(specs):
    """One line per entry: how it is searched (for summaries and error messages)."""
    by_name = {spec.entry.name: spec for spec in specs}
    lines = []
    for spec in specs:
        entry = spec.entry
        if spec.fixed:
            how = f"fixed at {spec.values[0]!r}"
        elif spec.is_range:
            how = f"{spec.sampling} in [{spec.values[0]:g}, {spec.values[1]:g}]"
        else:
            how = f"one of {list(spec.values)}"
        when = ""
        if entry.parent is not None:
            parent, active = _ancestors(entry, by_name)[-1]
            when = f" (when {parent} in {active})"
        default = "" if spec.fixed else f", default {spec.default!r}"
        lines.append(f"{entry.name}: {how}{when}{default}")
    return lines
