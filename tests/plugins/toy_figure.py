"""A toy figure, declared the way a user declares one: a ``figures`` entry of a config (what
it reads, ``draw: tests.plugins.toy_figure:draw``, its files) and this function, nothing
else. It writes what its spec hands it, so a test can read it back.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from pixmim.io import atomic_write


def draw(spec: dict, out: Path) -> Path:
    """``out`` (a text file) and ``<out>.csv``: one line per file the spec names (each row's
    metrics files, then the declared inputs) with its size."""
    files = [(r["label"], f) for r in spec["rows"] for f in r.get("files", [])]
    files += [("input", f) for f in spec.get("inputs", [])]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["label", "file", "bytes"])
    writer.writerows([label, f, Path(f).stat().st_size] for label, f in files)
    atomic_write(out, lambda tmp: tmp.write_text(f"{spec['figure']}: {len(files)} file(s)\n"))
    atomic_write(out.with_suffix(".csv"), lambda tmp: tmp.write_text(buf.getvalue()))
    return out
