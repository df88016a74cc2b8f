"""The backend is layered one way: jobs/pixels -> runtime -> models -> ops -> post -> engine ->
server -> cli.  Every import (module level or inside a function: lazy imports count) goes to the
same layer or below, and no two modules import each other, directly or in a circle."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "backend" / "ai_enhance"

#: first dotted component under ai_enhance -> layer (higher may import lower, never the reverse)
LAYERS = {
    "__init__": 0, "errors": 0, "paths": 0, "jobs": 0, "pixels": 0, "images": 0, "imaging": 0,
    "runtime": 1,
    "models": 2,
    "ops": 3,
    "post": 4,
    "engine": 5, "rawcache": 5,
    "server": 6, "batch": 6,
    "cli": 7, "doctor": 7, "__main__": 7,
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """ai_enhance modules imported anywhere in the file (absolute names)."""
    mod = _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "ai_enhance"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "ai_enhance":
                continue
            # "from . import x" / "from .models import y": x may be a submodule
            for a in node.names:
                candidate = f"{target}.{a.name}"
                out.add(candidate if _exists(candidate) else target)
    return out


def _exists(name: str) -> bool:
    p = PKG.parent.joinpath(*name.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def _layer(name: str) -> int:
    parts = name.split(".")
    key = parts[1] if len(parts) > 1 else "__init__"
    assert key in LAYERS, f"{name}: add its layer to LAYERS"
    return LAYERS[key]


FILES = sorted(PKG.rglob("*.py"))
GRAPH = {_module_name(f): _imports(f) for f in FILES}


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PKG)))
def test_imports_go_down_only(path):
    mod = _module_name(path)
    for target in GRAPH[mod]:
        assert _layer(target) <= _layer(mod), f"{mod} (layer {_layer(mod)}) imports {target} " \
                                              f"(layer {_layer(target)}): the layers go one way"


def test_no_import_circles():
    def resolve(name):          # a package import means its __init__
        return name if name in GRAPH else None

    seen, stack = set(), []

    def visit(m):
        if m in stack:
            cycle = stack[stack.index(m):] + [m]
            raise AssertionError("import circle: " + " -> ".join(cycle))
        if m in seen:
            return
        stack.append(m)
        for t in GRAPH.get(m, ()):
            r = resolve(t)
            if r and r != m:
                visit(r)
        stack.pop()
        seen.add(m)

    for m in GRAPH:
        visit(m)


def test_no_private_reaching_across_modules():
    """No `from x import _private` across modules (a package's own private helper module, `from .
    import _checks` inside that package, is its business)."""
    for f in FILES:
        tree = ast.parse(f.read_text("utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("ai_enhance")):
                for a in node.names:
                    own_module = node.level == 1 and not node.module and (f.parent / f"{a.name}.py").is_file()
                    assert own_module or not (a.name.startswith("_") and not a.name.startswith("__")), \
                        f"{f.relative_to(PKG)} imports private {a.name} from {node.module}"


def test_every_package_is_installed():
    """pyproject lists packages one by one: a new folder left out would be missing from a
    non-editable install (the tests run from an editable one and would not notice)."""
    import tomllib

    listed = set(tomllib.loads((PKG.parents[1] / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(PKG.parent).parts) for p in PKG.rglob("__init__.py")}
    assert found <= listed, f"add to pyproject's packages: {sorted(found - listed)}"
