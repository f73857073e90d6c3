"""Progress bars for steps longer than a few seconds (torch-free).

On a terminal the bar is redrawn every second and cleared when done; in a log file (SLURM,
``results/logs``) it is redrawn every 30 s, so a job log gets an update per half minute
rather than per item, and its final state (count, time) is kept. Bars go to stderr: stdout
keeps each command's one summary line.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqdm import tqdm


def progress(iterable: Iterable | None = None, desc: str = "", **kwargs: Any) -> tqdm:
    """``tqdm(iterable, desc=desc, **kwargs)`` on stderr at the interval above."""
    from tqdm import tqdm  # imported on use: a command's --help does not pay for it

    tty = sys.stderr.isatty()
    kwargs.setdefault("mininterval", 1.0 if tty else 30.0)
    kwargs.setdefault("leave", not tty)  # a log keeps the final count and time
    return tqdm(iterable, desc=desc, file=sys.stderr, dynamic_ncols=True, **kwargs)
