"""Stage ``data``: ``python -m pixmim data synth --out DIR --seed S`` (embedded dataset)."""

from __future__ import annotations

import argparse
import importlib
import sys

# generator -> (module, one line for `data --help`)
VIEWS = {
    "synth": ("pixmim.data.synth", "the synthetic-shapes ImageFolder (train/, val/, masks/)"),
    "views": ("pixmim.data.views", "its evaluation views: IN-C/-A/-R/-Sketch and cue-conflict"),
    "scenes": ("pixmim.data.scenes", "multi-object scenes in ADE20K and COCO layouts"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in VIEWS:  # the generator parses (and documents) its own options
        return importlib.import_module(VIEWS[argv[0]][0]).main(argv[1:])
    p = argparse.ArgumentParser(
        prog="python -m pixmim data", description="Generate an embedded dataset.",
        epilog="`python -m pixmim data <generator> --help` shows a generator's options.")
    sub = p.add_subparsers(dest="generator", required=True, metavar="<generator>",
                           help="the dataset to generate")
    for name, (_, help_) in VIEWS.items():
        sub.add_parser(name, help=help_, add_help=False)
    p.parse_args(argv)  # --help, or an error naming the missing / unknown generator
    return 2
