"""The phrasing probe scores every held-out word against the training words of its attribute."""

import pytest

pytest.importorskip("transformers")

from scripts.phrasing_probe import TABLES, main


def test_every_held_out_word_gets_a_row_and_the_counts_add_up(tmp_path):
    out = tmp_path / "probe.md"
    alone, context, total = main(out)
    held = [w for table in TABLES.values() for _, (_, ho) in table.items() for w in ho]
    assert total == len(held) > 0 and 0 <= alone <= total and 0 <= context <= total
    rows = [
        r for r in out.read_text().splitlines() if r.startswith("| ") and not r.startswith(("| attribute", "| ---"))
    ]
    assert [r.split(" | ")[1] for r in rows] == held
    yes_alone = sum(r.split(" | ")[5] == "yes" for r in rows)
    assert yes_alone == alone
    # "tiny" is MiniLM's nearest to "small" on its own: a probe that got this wrong would be broken
    assert next(r for r in rows if r.split(" | ")[1] == "tiny").split(" | ")[3].startswith("small")
