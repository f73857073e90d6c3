"""The paper's numbers we print beside ours (pixmim/report/paper_values.yaml) are the ones
the paper prints: each row's values must all appear on one line of the paper's text that
starts with the row's label (the text as extracted: ../shared/paper/PixMIM-TMLR2024.txt,
spaces removed). Skips when ../shared is absent.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT.parent / "shared" / "paper" / "PixMIM-TMLR2024.txt"
VALUES = yaml.safe_load((ROOT / "pixmim" / "report" / "paper_values.yaml").read_text())

# Rows whose label in the paper's text is not ours (the paper marks the knobs with ticks or
# names the model in a column): table -> our label -> the start of the paper's line.
PRINTED = {
    "table5c": {"LF": "✓-82.8", "LF+SRC": "✓✓83.2"},
    "table6": {"MAE RRC": "MAE✓82.1", "MAE SRC": "MAE✓82.4"},
    "table16": {"MAE ViT-S": "MAE1600ViT-S", "PixMIM MAE ViT-S": "PixMIMMAE1600ViT-S",
                "MAE ViT-L": "MAE1600ViT-L", "PixMIM MAE ViT-L": "PixMIMMAE1600ViT-L"},
}

pytestmark = pytest.mark.skipif(not PAPER.is_file(), reason=f"{PAPER} absent (../shared)")


def lines() -> list[str]:
    return [re.sub(r"\s+", "", line) for line in PAPER.read_text(encoding="utf-8").splitlines()]


def printed(table: str, label: str, cells: dict[str, float], text: list[str]) -> list[int]:
    start = PRINTED.get(table, {}).get(label, re.sub(r"\s+", "", label))
    values = [f"{v:.1f}" for k, v in cells.items() if k != "epochs"]
    return [i for i, line in enumerate(text)
            if line.startswith(start) and all(v in line for v in values)]


ROWS = [(t, label) for t, rows in VALUES.items() for label in rows]


@pytest.mark.parametrize("table, label", ROWS, ids=[f"{t}:{lab}" for t, lab in ROWS])
def test_paper_value_row_is_printed_in_the_paper(table, label):
    assert printed(table, label, VALUES[table][label], lines()), (
        f"paper_values.yaml {table} / {label}: {VALUES[table][label]} is on no line of the "
        "paper that starts with that row's label")


def test_a_mistyped_value_is_caught():
    cells = dict(VALUES["table2"]["PixMIM MAE"], lin=67.3)  # the paper prints 67.2
    assert not printed("table2", "PixMIM MAE", cells, lines())
