"""No model id past its shutdown date (the catalogue's lifecycle) in the README, the
example configs, the deploy examples or the tests, except on lines marked
``retired-id:`` (tests of retirement itself, and bridges that say why)."""

from __future__ import annotations

import re
from pathlib import Path

from proxy.catalogue.load import Catalogue
from proxy.catalogue.table import END, START

ROOT = Path(__file__).resolve().parents[2]
MARK = "retired-id:"
# Files whose models are deliverable 4 of issue 16 (today's models in every adapter
# and example, /work/wt-models): listed until that work lands, then this set must be
# emptied (the test fails when a listed file no longer needs it).
PENDING = {
    # Nova Canvas, Bedrock's only image model the amazon adapter calls, is past its
    # end of life with no Amazon successor found: its tests run it un-retired
    # (tests/conftest.py) until the adapter moves on.
    "README.md",
    "tests/contract.py",
    "tests/integration/test_model_routing.py",
    "tests/integration/test_amazon.py",
    "tests/unit/test_provider_build_parse.py",
    "tests/unit/test_translation_azure_xai_amazon_replicate_bfl.py",
    "tests/conftest.py",
    # dall-e-3 answers URLs itself: the one such model the fake OpenAI serves.
    "tests/integration/test_object_store.py",
}
# Tests of retirement itself: retired ids are their subject.
RETIREMENT_TESTS = {
    "tests/integration/test_retirements.py",
    "tests/unit/test_catalogue.py",
    "tests/unit/test_retired_ids.py",
}


def retired_ids() -> list[str]:
    cat = Catalogue.load_default()
    return sorted(
        {k.split("/", 1)[1] for k, _ in cat.items() if cat.status(k) == "shutdown"}
    )


def files() -> list[Path]:
    found = [ROOT / "README.md", *sorted((ROOT / "config").rglob("*.yaml"))]
    found += sorted(p for p in (ROOT / "deploy").rglob("*") if p.is_file())
    found += sorted((ROOT / "tests").rglob("*.py"))
    return found


def offenders() -> dict[str, list[str]]:
    ids = retired_ids()
    pattern = re.compile(
        r"(?<![\w.-])(" + "|".join(re.escape(i) for i in ids) + r")(?![\w.-])"
    )
    out: dict[str, list[str]] = {}
    for path in files():
        rel = str(path.relative_to(ROOT))
        if rel in RETIREMENT_TESTS:
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        if START in text and END in text:  # the generated table: its own test
            head, _, rest = text.partition(START)
            text = (
                head
                + "\n" * rest.partition(END)[0].count("\n")
                + rest.partition(END)[2]
            )
        for n, line in enumerate(text.splitlines(), 1):
            if MARK in line:
                continue
            for m in pattern.finditer(line):
                out.setdefault(rel, []).append(f"{rel}:{n}: {m[1]}")
    return out


def test_no_retired_model_ids_outside_marked_lines() -> None:
    found = offenders()
    unexpected = {f: hits for f, hits in found.items() if f not in PENDING}
    assert not unexpected, "retired model ids:\n" + "\n".join(
        h for hits in unexpected.values() for h in hits
    )


def test_pending_files_still_need_it() -> None:
    done = PENDING - set(offenders())
    assert not done, f"no retired ids left in {sorted(done)}: remove them from PENDING"
