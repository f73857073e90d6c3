"""The targets of the running ``snakemake`` command, for the Snakefile's root check."""

from __future__ import annotations

import argparse


def cli_targets(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """The targets of a ``snakemake`` command line, as Snakemake's own ``parser`` reads them
    (the Snakefile is parsed before Snakemake hands its targets to the DAG); none: the
    default rule's. The Snakefile passes ``snakemake.cli.get_argument_parser()``: the package
    itself imports no Snakemake (the ``workflow`` extra)."""
    try:
        args, _ = parser.parse_known_args(argv)
    except SystemExit:  # not a snakemake command line (an API call): the default targets
        return []
    return sorted(args.targets or [])
