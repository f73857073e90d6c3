"""Stage ``data``: ``python -m pixmim data synth --out DIR --seed S`` (embedded dataset);
``data fixtures --out DIR`` writes tiny datasets in the real datasets' layouts.

Each generated dataset gets its ``fingerprint.json`` once, right after it is generated
(:mod:`pixmim.report.provenance`); the jobs that read it record that fingerprint.
``data fingerprint --root DIR`` writes one for any folder (a real dataset: the listing).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from pixmim.report.provenance import SCHEME, write_fingerprint

# generator -> (module, one line for `data --help`)
VIEWS = {
    "synth": ("pixmim.data.generate.synth",
              "the synthetic-shapes ImageFolder (train/, val/, masks/)"),
    "views": ("pixmim.data.generate.views",
              "its evaluation views: IN-C/-A/-R/-Sketch and cue-conflict"),
    "scenes": ("pixmim.data.generate.scenes", "multi-object scenes in ADE20K and COCO layouts"),
    "fixtures": ("pixmim.data.generate.fixtures", "tiny datasets in the real datasets' own "
                 "layouts (ImageNet, masks, Places365, ADE20K, COCO, IN-C/A/R/Sketch, "
                 "cue-conflict)"),
}


def fingerprint_main(argv: list[str], stream=None) -> int:
    p = argparse.ArgumentParser(prog="python -m pixmim data fingerprint",
                                description=f"Write ROOT/fingerprint.json: {SCHEME}.")
    p.add_argument("--root", required=True, help="dataset folder (must be writable)")
    args = p.parse_args(argv)
    record = write_fingerprint(args.root)
    print(f"fingerprint: {args.root} {record['sha256']} ({record['files']} files)",
          file=stream or sys.stdout)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "fingerprint":
        return fingerprint_main(argv[1:])
    if argv and argv[0] in VIEWS:  # the generator parses (and documents) its own options
        rc = importlib.import_module(VIEWS[argv[0]][0]).main(argv[1:])
        if rc == 0:
            out = argparse.ArgumentParser(add_help=False)
            out.add_argument("--out", required=True)
            # a log line: stdout stays the generator's one-line summary
            fingerprint_main(["--root", out.parse_known_args(argv[1:])[0].out], sys.stderr)
        return rc
    p = argparse.ArgumentParser(
        prog="python -m pixmim data", description="Generate an embedded dataset.",
        epilog="`python -m pixmim data <generator> --help` shows a generator's options.")
    sub = p.add_subparsers(dest="generator", required=True, metavar="<generator>",
                           help="the dataset to generate, or `fingerprint`")
    for name, (_, help_) in VIEWS.items():
        sub.add_parser(name, help=help_, add_help=False)
    sub.add_parser("fingerprint", add_help=False,
                   help="write a dataset folder's fingerprint.json (a paper dataset's, say)")
    p.parse_args(argv)  # --help, or an error naming the missing / unknown generator
    return 2
