"""The README's "Models and prices" table is the catalogue's rendering."""

from __future__ import annotations

from pathlib import Path

from proxy.catalogue.load import Catalogue
from proxy.catalogue.table import END, START, markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_table_is_generated_from_the_catalogue() -> None:
    text = README.read_text()
    assert START in text, "README: the Models and prices section's start marker"
    section = START + text.split(START, 1)[1].split(END, 1)[0] + END
    cat = Catalogue.load_default()
    assert section == markdown(cat, cat.checked), (
        "README's table differs: run python -m proxy.catalogue.table"
    )
