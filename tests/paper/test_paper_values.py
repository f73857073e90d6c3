"""The paper's numbers we print beside ours (pixmim/report/paper_values.yaml) are the ones
the paper prints, column by column: each row's line of the paper's text (as extracted:
../shared/paper/PixMIM-TMLR2024.txt, spaces removed) starts with the row's label and, read
after it, holds exactly the row's values in the paper's column order (written below per
table from the paper's headers; gains in parentheses dropped). Skips when ../shared is
absent.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT.parent / "shared" / "paper" / "PixMIM-TMLR2024.txt"
VALUES = yaml.safe_load((ROOT / "pixmim" / "report" / "paper_values.yaml").read_text())

# The paper's columns, left to right, as paper_values.yaml names them (its table headers).
COLUMNS = {
    "table2": ["ft", "lin", "ap_box", "ap_mask", "miou"],  # ft lin APbox APmask mIoU
    "table3": ["ft", "lin", "miou"],                        # ft lin seg
    "table4": ["in_c", "in_a", "in_r", "in_s"],             # IN-C IN-A IN-R IN-S
    "table5a": ["ft", "lin", "miou"], "table5b": ["ft", "lin", "miou"],
    "table5c": ["ft", "lin", "miou"], "table6": ["ft", "lin", "miou"],
    "table16": ["lin", "miou", "ft"],                       # LIN SEG FT
    "table17": ["lin", "miou", "ap_box", "ft"],             # LIN SEG DET FT
    "table18": ["ap_box_2x", "ap_mask_2x"],                 # APbox APmask
    "table19": ["fs1", "fs10"],                             # 1% 10%
    "table21": ["lin", "miou", "ft"], "table22": ["lin", "miou", "ft"],
}
# Rows whose label in the paper's text is not ours (the paper marks the knobs with ticks or
# names the model in a column): table -> our label -> the start of the paper's line.
PRINTED = {
    "table5c": {"-": "--", "LF": "✓-", "SRC": "-✓", "LF+SRC": "✓✓"},
    "table6": {"MAE RRC": "MAE✓", "MAE SRC": "MAE✓"},
    "table16": {"MAE ViT-S": "MAE1600ViT-S", "PixMIM MAE ViT-S": "PixMIMMAE1600ViT-S",
                "MAE ViT-L": "MAE1600ViT-L", "PixMIM MAE ViT-L": "PixMIMMAE1600ViT-L"},
}
# A printed value: one or two digits and one decimal (every cell of these tables), read left
# to right in the line as extracted (cells may run together: "80083.5" is epoch 800, 83.5).
NUMBER = re.compile(r"\d{1,2}\.\d")

pytestmark = pytest.mark.skipif(not PAPER.is_file(), reason=f"{PAPER} absent (../shared)")


def lines() -> list[str]:
    return [re.sub(r"\s+", "", line) for line in PAPER.read_text(encoding="utf-8").splitlines()]


def cells_after(line: str, start: str) -> list[float]:
    """The values of a line after its label, the gains in parentheses dropped."""
    rest = re.sub(r"\([^)]*\)", "", line[len(start):])
    return [float(v) for v in NUMBER.findall(rest)]


def printed(table: str, label: str, cells: dict[str, float], text: list[str]) -> list[int]:
    """The lines of the paper that print this row: its label, then its values in the
    paper's column order and nothing else."""
    start = PRINTED.get(table, {}).get(label, re.sub(r"\s+", "", label))
    want = [cells[c] for c in COLUMNS[table]]
    return [i for i, line in enumerate(text)
            if line.startswith(start) and cells_after(line, start) == want]


ROWS = [(t, label) for t, rows in VALUES.items() for label in rows]


def test_every_table_has_its_columns_and_every_row_fills_them():
    assert set(COLUMNS) == set(VALUES)
    for table, rows in VALUES.items():
        for label, cells in rows.items():
            assert set(cells) - {"epochs"} == set(COLUMNS[table]), (table, label)


@pytest.mark.parametrize("table, label", ROWS, ids=[f"{t}:{lab}" for t, lab in ROWS])
def test_paper_value_row_is_printed_in_the_paper(table, label):
    cells = VALUES[table][label]
    assert printed(table, label, cells, lines()), (
        f"paper_values.yaml {table} / {label}: {[(c, cells[c]) for c in COLUMNS[table]]} is "
        "not a line of the paper that starts with that row's label (values in the paper's "
        "column order)")


def test_a_mistyped_value_is_caught():
    cells = dict(VALUES["table2"]["PixMIM MAE"], lin=67.3)  # the paper prints 67.2
    assert not printed("table2", "PixMIM MAE", cells, lines())


def test_two_swapped_columns_are_caught():
    cells = dict(VALUES["table2"]["MAE"])
    cells["ap_box"], cells["ap_mask"] = cells["ap_mask"], cells["ap_box"]
    assert not printed("table2", "MAE", cells, lines())
