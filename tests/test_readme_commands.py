"""Every command the README shows in its code blocks is one the project takes: each
``python -m pixmim ...`` line parses with that command's own parser (its options exist and
take what the README gives them), and each ``snakemake`` line names rules and tables the
workflow has and config files that exist."""

import argparse
import re
import shlex

import pytest

from pixmim import registry
from pixmim import workflow as W
from pixmim.__main__ import main
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```[a-z]*\n(.*?)^```", README, re.MULTILINE | re.DOTALL)
LINES = [re.split(r"\s#\s", line)[0].strip() for block in BLOCKS for line in block.splitlines()]
PIXMIM = sorted({line for line in LINES
                 if re.match(r"^(\.venv/bin/)?python -m pixmim \w", line)})
SNAKEMAKE = sorted({line for line in LINES if re.match(r"^(\.venv/bin/)?snakemake\b", line)})
RULES = set(re.findall(r"^rule (\w+):", "\n".join(
    p.read_text() for p in [ROOT / "Snakefile", *(ROOT / "workflow" / "rules").glob("*.smk")]),
    re.MULTILINE))


class Parsed(Exception):
    """Raised by the patched parser once the command line parsed."""


@pytest.fixture
def parse_only(monkeypatch):
    """Stop a command once its parser has read the line (``parse_args``, or
    ``parse_known_args`` for ``run``, which passes the rest on to the stage)."""
    parse_args, parse_known = argparse.ArgumentParser.parse_args, \
        argparse.ArgumentParser.parse_known_args
    inside = []

    def parse(self, args=None, namespace=None):
        inside.append(1)
        try:
            parse_args(self, args, namespace)  # an unknown option, a bad value: SystemExit
        finally:
            inside.pop()
        raise Parsed

    def known(self, args=None, namespace=None):
        out = parse_known(self, args, namespace)
        if not inside:
            raise Parsed
        return out

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", known)


def test_the_readme_shows_commands():
    assert len(PIXMIM) >= 10 and len(SNAKEMAKE) >= 5


@pytest.mark.parametrize("line", PIXMIM)
def test_each_pixmim_command_parses(line, parse_only):
    argv = shlex.split(re.sub(r"\[[A-Z]+ \.\.\.\]", "", line))[3:]  # drop "python -m pixmim"
    with pytest.raises(Parsed):
        main(argv)


@pytest.mark.parametrize("line", SNAKEMAKE)
def test_each_snakemake_command_names_what_exists(line):
    # Snakemake 9 reads every word after --configfile as a config file (targets go before)
    words = shlex.split(line)[1:]
    after = words[words.index("--configfile") + 1:] if "--configfile" in words else []
    files = after[:next((i for i, w in enumerate(after) if w.startswith("-")), len(after))]
    config = W.load_config(*(ROOT / f for f in files if (ROOT / f).is_file()))
    for word in words:
        if word.startswith("-") or word in files:
            if word in files and word != "my.yaml":
                assert (ROOT / word).is_file(), word
            continue
        if word.startswith("results/runs/"):  # a job's file: results/runs/<id>/<stage>/...
            assert word.split("/")[3] in registry.stages(), word
        elif "/" in word:  # a table's file
            name = re.fullmatch(r"results/tables/(\w+)\.(csv|md)", word)
            assert name and name.group(1) in config["tables"], word
        else:
            assert word in RULES, f"{word!r}: no such rule"
