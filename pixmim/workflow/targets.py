"""The targets of the running ``snakemake`` command, for the Snakefile (imports Snakemake:
kept apart from the package code that the data and training environments import)."""

from __future__ import annotations


def cli_targets(argv: list[str]) -> list[str]:
    """The targets of a ``snakemake`` command line, as Snakemake's own parser reads them
    (the Snakefile is parsed before Snakemake hands its targets to the DAG); none: the
    default rule's."""
    from snakemake.cli import get_argument_parser

    try:
        args, _ = get_argument_parser().parse_known_args(argv)
    except SystemExit:  # not a snakemake command line (an API call): the default targets
        return []
    return sorted(args.targets or [])
