"""Command-line flags generated from the operation table: every parameter of every operation is a
flag (``--noise-level 25``, ``--quality 40``, ``--codeformer-weight 0.7``); the values given are
checked against the chosen operation's declarations by the same validator the backend and the
plug-in use, so a flag of another operation is refused with the operation's own list."""
from __future__ import annotations

import argparse
from pathlib import Path

from ai_enhance_client import ops as optable
from ai_enhance_client.params import Kind, Param, ParamError, Stage, validate


#: Parameters whose command-line form names an output file (given = on).
FILE_FLAGS = {"change-map": "also write the change map here (8-bit gray at the output's size, 255 = where "
                            "the AI departed most from the photo)"}


def table_params() -> dict[str, Param]:
    """Every option / post parameter of the table by name (first declaration wins for help)."""
    out: dict[str, Param] = {}
    for op in optable.OPS:
        for p in op.params:
            out.setdefault(p.name, p)
    return out


def add_param_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("operation parameters (see --op; each applies to some operations)")
    for name, p in table_params().items():
        users = [o for o in optable.OPS if o.param(name) is not None]
        defaults = {o.param(name).default for o in users}
        default = repr(p.default) if len(defaults) == 1 else \
            ", ".join(f"{o.name} {o.param(name).default!r}" for o in users)
        hint = f"{p.help} [{p.describe_range()}; default {default}; --op {'/'.join(o.name for o in users)}]"
        dest = "param_" + name.replace("-", "_")
        if name in FILE_FLAGS:
            group.add_argument(p.flag, dest=dest, default=None, type=Path, metavar="FILE",
                               help=FILE_FLAGS[name])
        elif p.kind is Kind.BOOL:
            group.add_argument(p.flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=hint)
        else:
            metavar = "|".join(p.values) if p.kind is Kind.CHOICE else p.kind.value.upper()
            group.add_argument(p.flag, dest=dest, default=None, metavar=metavar, help=hint)


def collect(args: argparse.Namespace, op: optable.OpSpec) -> tuple[dict, dict]:
    """(options, post) for ``op`` from the flags given; ParamError for a flag the operation does
    not take or a value outside its range."""
    given = {name: getattr(args, "param_" + name.replace("-", "_"), None) for name in table_params()}
    given = {k: v for k, v in given.items() if v is not None}
    foreign = [k for k in given if op.param(k) is None]
    if foreign:
        own = ", ".join(p.flag for p in op.params) or "none"
        raise ParamError(f"--{', --'.join(foreign)} do{'es' if len(foreign) == 1 else ''} not apply to "
                         f"--op {op.name} (its parameters: {own})")
    values = {}
    for k, v in given.items():
        p = op.param(k)
        values[k] = True if k in FILE_FLAGS else (v if isinstance(v, bool) else p.parse(v))
    options = validate([p for p in op.params if p.stage is Stage.OPTION],
                       {k: v for k, v in values.items() if op.param(k).stage is Stage.OPTION},
                       what=op.name, fill_defaults=False)
    post = validate([p for p in op.params if p.stage is Stage.POST],
                    {k: v for k, v in values.items() if op.param(k).stage is Stage.POST},
                    what=op.name, fill_defaults=False)
    return options, post
