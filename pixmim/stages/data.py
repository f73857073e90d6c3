"""Stage ``data``: ``python -m pixmim data synth --out DIR --seed S`` (embedded dataset)."""

from __future__ import annotations

import sys

VIEWS = {
    "synth": "pixmim.data.synth",
    "views": "pixmim.data.views",
    "scenes": "pixmim.data.scenes",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in VIEWS:
        print(f"usage: python -m pixmim data {{{','.join(VIEWS)}}} --out DIR --seed S ...",
              file=sys.stderr)
        return 2
    import importlib

    return importlib.import_module(VIEWS[argv[0]]).main(argv[1:])
