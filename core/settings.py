"""One source for every setting: frozen config dataclasses declare each field once, and their checks, dicts, CLI flags and form fields derive from it."""
from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
import types
import typing
from dataclasses import dataclass

_UNSET = object()


def setting(default=_UNSET, *, help: str, flag: str | None = None, aliases: tuple[str, ...] = (),
            label: str | None = None, minimum=None, above=None, maximum=None, below=None,
            choices: tuple | None = None, none_means: str | None = None):
    """A config field with everything derived from it: its default, checks, flag and form label.

    Args:
        help: one line for --help and the form's tooltip.
        flag: the command-line flag (None: not on the command line); `aliases` are older spellings.
        label: the form's human label (None: not on the form).
        minimum / maximum: inclusive bounds; above / below: exclusive bounds (numbers are also finite).
        choices: the allowed values.
        none_means: for a field that may be None, what None means (the form offers it as 0).
    """
    metadata = dict(help=help, flag=flag, aliases=tuple(aliases), label=label, minimum=minimum,
                    above=above, maximum=maximum, below=below, choices=choices, none_means=none_means)
    if default is _UNSET:
        return dataclasses.field(metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _base_type(hint) -> tuple[type, bool]:
    """(int|float|bool|str, whether None is allowed) of a field's annotation."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        return members[0], True
    return hint, False


def check_value(name: str, value, kind: type, meta: dict):
    """The value when it suits the field (an int where a float is asked becomes a float); else ValueError."""
    ok = {bool: lambda v: isinstance(v, bool),
          int: lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool),
          float: lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool),
          str: lambda v: isinstance(v, str)}[kind]
    if not ok(value):
        raise ValueError(f"Expected {name} to be {kind.__name__}. Received: {name}={value!r}")
    if kind is str and not value.strip():
        raise ValueError(f"Expected {name} to be a non-empty text. Received: {name}={value!r}")
    if kind is int and type(value) is not int:
        value = int(value)  # a NumPy integer, say
    if kind is float:
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"Expected {name} to be a finite number. Received: {name}={value!r}")
    bounds = [("minimum", ">=", lambda v, b: v >= b), ("above", ">", lambda v, b: v > b),
              ("maximum", "<=", lambda v, b: v <= b), ("below", "<", lambda v, b: v < b)]
    for key, sign, holds in bounds:
        if meta.get(key) is not None and not holds(value, meta[key]):
            raise ValueError(f"Expected {name} {sign} {meta[key]}. Received: {name}={value!r}")
    if meta.get("choices") and value not in meta["choices"]:
        raise ValueError(f"Expected {name} in {list(meta['choices'])}. Received: {name}={value!r}")
    return value


class Config:
    """Mixin for the frozen config dataclasses: checked on construction, strict from_dict, to_dict.

    A subclass adds rules between fields in `check(self)`.
    """

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            kind, optional = _base_type(hints[field.name])
            if value is None and optional:
                continue
            checked = check_value(field.name, value, kind, field.metadata)
            if checked is not value:
                object.__setattr__(self, field.name, checked)
        self.check()

    def check(self) -> None:
        """Rules between fields (none by default)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values) -> "Config":
        """Rebuild from a dict (config.json): an unknown or missing key, or a wrong type, is a ValueError naming it.

        Keys missing from files written by older versions take the field's default.
        """
        if not isinstance(values, dict):
            raise ValueError(f"Expected a JSON object for {cls.__name__}. Received: {values!r:.60}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{cls.__name__} has no setting {unknown[0]!r}. Expected keys among "
                             f"{sorted(known)}.")
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in values
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ValueError(f"{cls.__name__} needs {missing[0]!r}; it is missing.")
        return cls(**values)

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)


# --- the command line -----------------------------------------------------------------------------
def number(kind: type, name: str, **bounds):
    """An argparse `type` that parses one number and checks it now (finite, in range): nothing is half-done."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}; "
                                             f"received {text!r}") from None
        try:
            return check_value(name, value, kind, bounds)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def text(name: str):
    """An argparse `type` for a text flag (a folder, a file, a name): anything but an empty or blank one,
    which would quietly mean the working folder."""
    def parse(value: str):
        if not value.strip():
            raise argparse.ArgumentTypeError(f"Expected {name} to be a non-empty text. Received: {value!r}")
        return value
    parse.__name__ = "text"
    return parse


def add_flags(group, cls, defaults: Config | None = None) -> None:
    """Add the flags of `cls`'s fields to a parser or group. Defaults are left out of the namespace
    (argparse.SUPPRESS): only what the user typed is there, and the dataclass (or `defaults`, whose
    values the help shows) fills in the rest."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        meta = field.metadata
        if not meta.get("flag"):
            continue
        kind, _ = _base_type(hints[field.name])
        default = (getattr(defaults, field.name) if defaults is not None
                   else field.default if field.default is not dataclasses.MISSING else None)
        shown = meta["none_means"] if default is None and meta.get("none_means") else default
        options = dict(dest=field.name, default=argparse.SUPPRESS,
                       help=f"{meta['help']} (default: {shown})".replace("%", "%%"))
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            bounds = {k: meta[k] for k in ("minimum", "above", "maximum", "below") if meta.get(k) is not None}
            options["type"] = number(kind, field.name, **bounds) if kind in (int, float) else text(field.name)
            if meta.get("choices"):
                options["choices"] = meta["choices"]
        group.add_argument(meta["flag"], *meta["aliases"], **options)


def flags(cls) -> dict[str, str]:
    """Field name -> its command-line flag, for the fields that have one."""
    return {f.name: f.metadata["flag"] for f in dataclasses.fields(cls) if f.metadata.get("flag")}


def given(cls, namespace) -> dict:
    """The fields of `cls` the user typed on the command line."""
    return {f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls)
            if hasattr(namespace, f.name)}


def to_argv(config: Config) -> list[str]:
    """The flags that rebuild `config` from the command line (fields without a flag are left out)."""
    return values_to_argv(type(config), dataclasses.asdict(config))


def values_to_argv(cls, values: dict) -> list[str]:
    """The flags that set these fields of `cls` (a subset of its fields, say a form's) on the command line."""
    argv = []
    for field in dataclasses.fields(cls):
        if field.name not in values:
            continue
        flag, value = field.metadata.get("flag"), values[field.name]
        if not flag or value is None:
            continue
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        else:
            argv += [flag, repr(value) if isinstance(value, float) else str(value)]
    return argv


# --- forms ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FormField:
    """What a form needs to draw one setting: a widget kind, its label, help, default and bounds."""

    name: str
    kind: type  # int, float, bool or str
    label: str
    help: str
    default: typing.Any
    minimum: typing.Any = None
    maximum: typing.Any = None
    choices: tuple | None = None
    none_means: str | None = None  # None is offered as 0 with this meaning


def form_fields(cls, names: tuple[str, ...]) -> list[FormField]:
    """The form fields of `names`, in that order, from the dataclass' own metadata."""
    by_name, hints = {f.name: f for f in dataclasses.fields(cls)}, typing.get_type_hints(cls)
    specs = []
    for name in names:
        field, meta = by_name[name], by_name[name].metadata
        kind, _ = _base_type(hints[name])
        minimum = meta.get("minimum")
        if minimum is None and meta.get("above") is not None:
            minimum = meta["above"] + (1 if kind is int else 1e-6)
        help_text = meta["help"] + (f" (flag {meta['flag']})" if meta.get("flag") else "")
        specs.append(FormField(name, kind, meta.get("label") or name, help_text,
                               None if field.default is dataclasses.MISSING else field.default,
                               minimum, meta.get("maximum"), meta.get("choices"), meta.get("none_means")))
    return specs
