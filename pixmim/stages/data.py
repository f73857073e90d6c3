"""Stage ``data``: ``python -m pixmim data synth --out DIR --seed S`` (embedded dataset).

Each generated dataset gets its ``fingerprint.json`` once, right after it is generated
(:mod:`pixmim.report.provenance`); the jobs that read it record that fingerprint.
``data fingerprint --root DIR`` writes one for any folder (a real dataset: the listing).
"""

from __future__ import annotations

import argparse
import sys

VIEWS = {
    "synth": "pixmim.data.synth",
    "views": "pixmim.data.views",
    "scenes": "pixmim.data.scenes",
}


def fingerprint_main(argv: list[str]) -> int:
    from pixmim.report.provenance import SCHEME, write_fingerprint

    p = argparse.ArgumentParser(prog="python -m pixmim data fingerprint",
                                description=f"Write ROOT/fingerprint.json: {SCHEME}.")
    p.add_argument("--root", required=True, help="dataset folder (must be writable)")
    args = p.parse_args(argv)
    record = write_fingerprint(args.root)
    print(f"fingerprint: {args.root} {record['sha256']} ({record['files']} files)")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "fingerprint":
        return fingerprint_main(argv[1:])
    if not argv or argv[0] not in VIEWS:
        print(f"usage: python -m pixmim data {{{','.join(VIEWS)},fingerprint}} --out DIR "
              "--seed S ...", file=sys.stderr)
        return 2
    import importlib

    rc = importlib.import_module(VIEWS[argv[0]]).main(argv[1:])
    if rc == 0:
        out = argparse.ArgumentParser(add_help=False)
        out.add_argument("--out", required=True)
        fingerprint_main(["--root", out.parse_known_args(argv[1:])[0].out])
    return rc
