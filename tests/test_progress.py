"""Progress bars: on stderr, and sparse in a log file."""

import io

from pixmim.data.generate import synth
from pixmim.progress import progress


def test_a_bar_in_a_log_file_is_redrawn_at_most_every_30_s(capsys):
    bar = progress(range(3), "step")  # pytest's captured stderr is not a terminal
    assert list(bar) == [0, 1, 2]
    assert bar.mininterval == 30.0 and bar.leave
    err = capsys.readouterr().err
    assert "step: 100%" in err and err.count("step:") == 2  # the start and the final state


def test_a_bar_on_a_terminal_is_redrawn_every_second(monkeypatch):
    tty = io.StringIO()
    tty.isatty = lambda: True
    monkeypatch.setattr("sys.stderr", tty)
    bar = progress(range(3), "step")
    assert bar.mininterval == 1.0 and not bar.leave
    assert "step:" in tty.getvalue()
    bar.close()


def test_the_generator_shows_a_bar_on_stderr_and_one_line_on_stdout(tmp_path, capsys):
    argv = ["--out", str(tmp_path / "d"), "--train-per-class", "1", "--val-per-class", "1",
            "--short-side", "32"]
    assert synth.main(argv) == 0
    out, err = capsys.readouterr()
    assert out.startswith("synth: ") and len(out.splitlines()) == 1
    assert f"32/{2 * len(synth.CATEGORIES)} [" in err and "class/s" in err
