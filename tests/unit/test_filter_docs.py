"""The filter pages (docs/filters/<op>.md and the Help button's plugin/ai-enhance/help/<op>.html)
are generated from the operation table and must be current: a new row or parameter shows up in
its page, or this test says to regenerate."""
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _gen():
    spec = importlib.util.spec_from_file_location("gen_filter_docs", REPO / "docs" / "gen_filter_docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_pages_are_current_and_cover_every_row_and_parameter():
    gen = _gen()
    assert gen.main(["--check"]) == 0, "run python3 docs/gen_filter_docs.py"
    for op in gen.optable.menu_ops():
        md = (REPO / "docs" / "filters" / f"{op.name}.md").read_text()
        page = (REPO / "plugin" / "ai-enhance" / "help" / f"{op.name}.html").read_text()
        assert f"# {op.title}" in md and f"<h1>{op.title}</h1>" in page
        for p in op.all_params:
            assert f"| {p.label.replace('_', '')}" in md, (op.name, p.name)
        assert f"../img/dialog-{op.name}.png" in md
