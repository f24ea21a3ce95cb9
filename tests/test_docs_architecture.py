"""docs/architecture.md follows the code: every bus message kind with its fields and retention,
every child state, and every control command appear as the code defines them."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from sriovdp.shared.messages import KINDS
from sriovdp.supervisor.states import TRANSITIONS, ChildState

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def bus_rows() -> dict[str, list[str]]:
    """kind -> the cells of its row in the bus table."""
    rows: dict[str, list[str]] = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[1].startswith("`") and "(`" in cells[1]:
            kind = cells[1].split("`")[1]
            rows[kind] = cells
    return rows


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_bus_table_row_matches_the_message_class(kind: str) -> None:
    cls = KINDS[kind]
    row = bus_rows().get(kind)
    assert row is not None, f"{kind} is missing from the bus table"
    topic, name, retained, _producer, _consumers, body = row
    assert f"`{cls.__name__}`" in name
    assert retained == ("yes" if cls.RETAINED else "no"), kind
    fields = [f.name for f in dataclasses.fields(cls)]
    documented = [f.strip() for f in body.strip("`").split(",")]
    assert documented == fields, kind
    assert (
        topic.startswith("`") and topic.strip("`").split(".")[0] == kind.split(".", maxsplit=1)[0]
    )


def test_no_bus_row_for_a_kind_that_does_not_exist() -> None:
    assert set(bus_rows()) <= set(KINDS), set(bus_rows()) - set(KINDS)


def test_state_diagram_has_exactly_the_allowed_transitions() -> None:
    text = DOC.read_text()
    drawn = set(re.findall(r"^\s+([A-Z]+) --> ([A-Z]+):", text, re.MULTILINE))
    allowed = {(a.name, b.name) for a, targets in TRANSITIONS.items() for b in targets}
    assert drawn == allowed
    for state in ChildState:
        assert state.name in text
