"""Parameters of the operations, declared once and validated by one function.

A ``Param`` is everything the three front ends need: the PDB argument of the plug-in (name, type,
range, default, choices), its dialog control (label, unit, tooltip, advanced), the CLI flag
(``--noise-level``) and the backend's check of what arrives on the wire.  ``validate`` is the one
validator: the backend calls it on every request, the CLI before it sends, the plug-in on what the
PDB hands it.  Unknown keys are refused: a typo must not silently run with the default.

Standard library only (this file runs inside GIMP's Python).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any, Iterable, Mapping, Sequence

_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,40}$")
_STRING_RE = re.compile(r"^[A-Za-z0-9_.+-]{0,128}$")


class ParamError(ValueError):
    """A parameter value that does not fit its declaration: one line naming it and the fix."""


class Kind(str, Enum):
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    CHOICE = "choice"
    STRING = "string"      # a short identifier (a model id); empty = none


class Stage(str, Enum):
    """Where a parameter travels and who consumes it."""
    JOB = "job"            # header fields and layer settings: model, scale, tile, strength, mask
    OPTION = "option"      # the request's `options`: read by the operation and its model
    POST = "post"          # the request's `post`: read by the post-processing stage


@dataclass(frozen=True)
class Choice:
    value: str
    label: str
    help: str = ""


@dataclass(frozen=True)
class Param:
    name: str                          # PDB argument, wire key and CLI flag (kebab-case)
    kind: Kind
    default: Any
    label: str                         # dialog label, with a mnemonic underscore
    help: str                          # tooltip and --help text
    min: float | None = None
    max: float | None = None
    choices: tuple[Choice, ...] = ()
    unit: str = ""                     # shown beside the control: "%", "px", "levels"
    stage: Stage = Stage.OPTION
    advanced: bool = False             # under the dialog's Advanced section
    applies_to: tuple[str, ...] = ()   # model ids or spandrel architectures using it; () = all
    percent: bool = False              # a 0..1 value the dialog shows as 0..100 %
    from_image: str = ""               # an image fact that gives the dialog's default ("jpeg-quality")

    def __post_init__(self):
        if not _NAME_RE.match(self.name):
            raise ValueError(f"parameter name {self.name!r} must be kebab-case")
        if self.kind is Kind.CHOICE and not self.choices:
            raise ValueError(f"choice parameter {self.name} has no choices")
        if self.kind in (Kind.INT, Kind.FLOAT) and (self.min is None or self.max is None):
            raise ValueError(f"numeric parameter {self.name} needs min and max")
        self.check(self.default, "default")

    @property
    def flag(self) -> str:
        return "--" + self.name

    @property
    def values(self) -> tuple[str, ...]:
        return tuple(c.value for c in self.choices)

    def applies(self, model_id: str = "", arch: str = "") -> bool:
        return not self.applies_to or model_id in self.applies_to or arch in self.applies_to

    def describe_range(self) -> str:
        if self.kind is Kind.CHOICE:
            return ", ".join(self.values)
        if self.kind in (Kind.INT, Kind.FLOAT):
            return f"{_num(self.min)}..{_num(self.max)}"
        if self.kind is Kind.BOOL:
            return "true or false"
        return "a short name"

    def check(self, value: Any, what: str = "") -> Any:
        """The value, normalised (ints stay ints, floats become float); ParamError otherwise."""
        where = f"{what}: " if what else ""
        bad = ParamError(f"{where}{self.name} must be {self.kind.value} {self.describe_range()}, "
                         f"got {value!r}")
        if self.kind is Kind.BOOL:
            if not isinstance(value, bool):
                raise bad
            return value
        if self.kind is Kind.INT:
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                else:
                    raise bad
            if not self.min <= value <= self.max:
                raise bad
            return value
        if self.kind is Kind.FLOAT:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise bad
            if not self.min <= value <= self.max:
                raise bad
            return float(value)
        if self.kind is Kind.CHOICE:
            if value not in self.values:
                raise bad
            return value
        if not isinstance(value, str) or not _STRING_RE.match(value):
            raise bad
        return value

    def parse(self, text: str) -> Any:
        """A command-line string -> the typed value (then checked)."""
        t = text.strip()
        if self.kind is Kind.BOOL:
            low = t.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ParamError(f"{self.name} must be true or false, got {text!r}")
        if self.kind is Kind.INT:
            try:
                return self.check(int(t))
            except ValueError:
                raise ParamError(f"{self.name} must be an integer {self.describe_range()}, got {text!r}") from None
        if self.kind is Kind.FLOAT:
            try:
                v = float(t.rstrip("%")) / (100.0 if t.endswith("%") else 1.0)
            except ValueError:
                raise ParamError(f"{self.name} must be a number {self.describe_range()}, got {text!r}") from None
            return self.check(v)
        return self.check(t)


def _num(v: float | None) -> str:
    if v is None:
        return "?"
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def validate(params: Sequence[Param], values: Mapping[str, Any] | None, *, what: str,
             fill_defaults: bool = True) -> dict:
    """``values`` checked against ``params``: every key must be declared, every value fit.
    Returns a new dict (with the defaults of missing parameters when ``fill_defaults``)."""
    by_name = {p.name: p for p in params}
    values = dict(values or {})
    unknown = sorted(k for k in values if k not in by_name)
    if unknown:
        known = ", ".join(by_name) or "none"
        raise ParamError(f"{what}: unknown parameter{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(map(repr, unknown))}; known: {known}")
    out = {}
    for p in params:
        if p.name in values and values[p.name] is not None:
            out[p.name] = p.check(values[p.name], what)
        elif fill_defaults:
            out[p.name] = p.default
    return out


def defaults(params: Iterable[Param]) -> dict:
    return {p.name: p.default for p in params}


def by_stage(params: Iterable[Param], stage: Stage) -> tuple[Param, ...]:
    return tuple(p for p in params if p.stage is stage)
