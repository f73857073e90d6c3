"""The CLI as users meet it: every command's --help, help text on every option, aliases."""

import argparse
import subprocess
import sys

import pytest

from pixmim import registry
from pixmim.__main__ import commands, main
from tests.conftest import ROOT

# commands whose --help must not import the heavy stack (they start in ~0.1 s)
TORCH_FREE = ("table", "figure", "budget", "data", "data synth", "data views", "data scenes",
              "mlflow-sync", "mlflow-init")
HEAVY = ("torch", "timm", "pandas", "scipy", "mlflow")


def help_of(argv: list[str], monkeypatch) -> tuple[argparse.ArgumentParser, int]:
    """The parser that prints ``argv --help`` and the exit status of ``main``."""
    shown: list[argparse.ArgumentParser] = []
    print_help = argparse.ArgumentParser.print_help

    def record(self, file=None):
        shown.append(self)
        print_help(self, file)

    monkeypatch.setattr(argparse.ArgumentParser, "print_help", record)
    try:
        status = main([*argv, "--help"])
    except SystemExit as e:
        status = e.code
    assert len(shown) == 1, f"{' '.join(argv)} --help printed {len(shown)} parsers"
    return shown[0], status


def walk(argv: list[str], monkeypatch) -> list[str]:
    """``--help`` of ``argv`` and of every sub-command below it: the options without help
    text, as ``command option`` strings; asserts that each --help exits 0."""
    parser, status = help_of(argv, monkeypatch)
    assert status == 0, f"{' '.join(argv)} --help exited {status}"
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name in action.choices:
                missing += walk([*argv, name], monkeypatch)
        elif not action.help:
            missing.append(f"{' '.join(argv)} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_option_of_every_command_has_help_and_help_exits_0(monkeypatch, capsys):
    missing = [m for name in commands() for m in walk([name], monkeypatch)]
    assert missing == []
    assert "linear-probe" in commands() and "mlflow-sync" in commands()


def test_help_of_torch_free_commands_imports_no_heavy_library():
    """In a fresh interpreter (this one may have imported torch already)."""
    code = (
        "import sys\n"
        "from pixmim.__main__ import main\n"
        f"for argv in {[c.split() for c in TORCH_FREE]!r}:\n"
        "    try:\n"
        "        main([*argv, '--help'])\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, (argv, e.code)\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"


def test_top_level_help_lists_hyphenated_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.split("commands:")[1].split("\n\n")[0].splitlines()
              if line.startswith("  ")]
    assert listed == list(commands())
    assert all("_" not in name for name in listed)


@pytest.mark.parametrize("alias", [n for n in registry.stages() if "_" in n]
                         + ["mlflow_sync", "mlflow_init"])
def test_underscore_spellings_are_aliases(alias, monkeypatch):
    """The old spellings (the stage keys the rules and folders use) still run their command."""
    parser, status = help_of([alias], monkeypatch)
    assert status == 0
    canonical, _ = help_of([alias.replace("_", "-")], monkeypatch)
    assert [a.dest for a in parser._actions] == [a.dest for a in canonical._actions]


def test_unknown_command_is_named(capsys):
    assert main(["linear-prob"]) == 2
    assert "unknown command 'linear-prob'" in capsys.readouterr().err


@pytest.mark.parametrize("typed", ["linear_probe", "linear-probe"])
def test_an_error_line_names_the_command_as_typed(typed, tmp_path, capsys):
    missing = tmp_path / "missing.yaml"
    assert main([typed, "--config", str(missing), "--out", str(tmp_path / "x")]) == 1
    assert capsys.readouterr().err.startswith(f"pixmim {typed}: error: ")


def test_a_reader_that_goes_away_gets_no_traceback():
    """`pixmim budget | head -1`: the pipe's reader is gone before the output is written;
    the command ends quietly with SIGPIPE's status (141) instead of a BrokenPipeError
    traceback. The read end is closed before the child writes, so the test does not race."""
    proc = subprocess.Popen([sys.executable, "-m", "pixmim", "budget"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
