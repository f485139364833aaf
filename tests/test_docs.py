"""The docs describe what the code does: the schema table is generated, every preset is listed."""

from pathlib import Path

from engine.config import docs as schema_doc
from engine.config.presets import list_presets

ROOT = Path(__file__).resolve().parent.parent


def test_presets_doc_schema_is_current():
    text = (ROOT / "docs" / "PRESETS.md").read_text()
    assert schema_doc.splice(text) == text, "run: python -m engine.config.docs --write"


def test_every_paper_preset_is_listed_in_the_doc():
    text = (ROOT / "docs" / "PRESETS.md").read_text()
    missing = [e.name for e in list_presets() if e.name.startswith("paper/") and f"`{e.name}`" not in text]
    assert not missing, missing


def test_readme_quick_start_has_exactly_the_two_commands():
    text = (ROOT / "README.md").read_text()
    block = text.split("## Quick start", 1)[1].split("```", 2)[1]
    assert [ln for ln in block.splitlines() if ln.strip()] == ["make run", "make test"]
