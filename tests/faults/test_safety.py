"""Safety: our checkpoints load with ``torch.load(weights_only=True)``; every server we start
binds 127.0.0.1; no config value reaches a shell unquoted."""

import ast
import re
import string
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from timm.optim import create_optimizer_v2

from pixmim.config import JobConfig, TrainConfig, from_dict
from pixmim.engine.loop import ResumeState, fit, make_loader
from pixmim.models.classifier import build_classifier, save_classifier
from pixmim.stages import linear_probe, pretrain
from pixmim.stages.common import save_model
from tests.conftest import ROOT
from tests.faults.jobs import ARCH, pretrain_job

THIS = Path(__file__).resolve()


# ---------------------------------------------------------------- weights_only
class Images(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, key):
        i, seed = key
        g = torch.Generator().manual_seed(seed)
        return torch.randn(3, 64, 64, generator=g), i % 4, seed


def _job() -> JobConfig:
    return from_dict(JobConfig, pretrain_job("unused"))


def _pretrain_setup(cfg):
    model = pretrain.build(_job())
    return model, pretrain.build_optimizer(model, cfg, torch.device("cpu")), \
        lambda b: model(b[0])[0]


def _probe_setup(cfg):
    head = linear_probe.build_head(16, 4)
    return head, linear_probe.lars(head, _job()), \
        lambda b: nn.functional.cross_entropy(head(b[0].flatten(1)[:, :16]), b[1])


def _finetune_setup(cfg):
    model = build_classifier("mae", ARCH, 4, 0.1, "avg")
    opt = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.75)
    return model, opt, lambda b: nn.functional.cross_entropy(model(b[0]), b[1])


@pytest.mark.parametrize("setup", [_pretrain_setup, _probe_setup, _finetune_setup],
                         ids=["pretrain-adamw", "probe-lars", "finetune-layer-decay"])
def test_resume_states_and_outputs_load_weights_only(tmp_path, setup):
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=1, batch_size=4, ckpt_every_steps=1, seed=3)
    model, opt, loss_fn = setup(cfg)
    fit(model, loss_fn, opt, make_loader(Images(), cfg, train=True), cfg, tmp_path,
        extra_state={"mlflow_run_id": "abc"})
    state = torch.load(ResumeState(tmp_path).path, map_location="cpu", weights_only=True)
    assert state["step"] == 2 and state["optimizer"]["state"] and state["mlflow_run_id"] == "abc"
    save_model(tmp_path / "checkpoint.pth", model, {"method": "mae", "arch": ARCH,
                                                    "variant": {"radius": 40}})
    back = torch.load(tmp_path / "checkpoint.pth", map_location="cpu", weights_only=True)
    assert back["model"].keys() == model.state_dict().keys()


def test_classifier_file_loads_weights_only(tmp_path):
    model = build_classifier("mae", ARCH, 16)
    save_classifier(tmp_path / "model.pth", model, {"method": "mae", "arch": ARCH,
                                                    "num_classes": 16, "global_pool": "avg"})
    back = torch.load(tmp_path / "model.pth", map_location="cpu", weights_only=True)
    assert back["meta"]["num_classes"] == 16


# documented exceptions: file -> why weights_only may be off there
UNSAFE_LOAD_ALLOWED = {
    "pixmim/downstream/common.py": "mmengine resume checkpoints (message hub objects), only "
                                   "under a work dir this very process registered (trust())",
}


def _py_files(*dirs):
    for d in dirs:
        yield from (p for p in sorted((ROOT / d).rglob("*.py")) if p.resolve() != THIS)


def test_every_torch_load_in_the_package_is_weights_only():
    found = 0
    for path in _py_files("pixmim"):
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                found += 1
                kw = {k.arg: k.value for k in node.keywords}
                safe = isinstance(kw.get("weights_only"), ast.Constant) and \
                    kw["weights_only"].value is True
                assert safe or rel in UNSAFE_LOAD_ALLOWED, f"{rel}:{node.lineno}"
    assert found >= 3


# ---------------------------------------------------------------- servers
SERVER = re.compile(r"mlflow\s+(ui|server)\b")


def test_every_mlflow_server_we_start_binds_loopback():
    found = []
    makefile = (ROOT / "Makefile").read_text()
    for line in makefile.splitlines():
        if SERVER.search(line):
            found.append(("Makefile", line))
    assert any("ui" in line for _, line in found), "the Makefile's ui target starts no server"
    for path in sorted((ROOT / "workflow").rglob("*")):
        if path.is_file():
            found += [(path.name, s) for s in path.read_text().splitlines() if SERVER.search(s)]
    for path in _py_files("pixmim", "tests"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.List | ast.Tuple):  # ["mlflow", "server", "--host", ...]
                words = [e.value for e in node.elts
                         if isinstance(e, ast.Constant) and isinstance(e.value, str)]
                text = " ".join(words)
                if SERVER.search(text):
                    found.append((path.name, text))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and SERVER.search(node.value) and "--" in node.value:
                found.append((path.name, node.value))
    assert len(found) >= 2, found  # the Makefile's ui, the browser test's server
    for where, cmd in found:
        assert re.search(r"--host[ =]127\.0\.0\.1\b", cmd), (where, cmd)
    for path in [ROOT / "Makefile", *(ROOT / "workflow").rglob("*.smk"),
                 *_py_files("pixmim", "tests")]:
        assert "0.0.0.0" not in path.read_text(), path


# ---------------------------------------------------------------- shell quoting
UNQUOTED_OK = {"threads"}  # an int Snakemake computes (cores), never a config string
# a command, not a word: pixmim.workflow.launch.launch_command builds it from the job's
# layout integers (schema-checked) with every string in it shlex-quoted
UNQUOTED_COMMANDS = {"params.launch"}


def shell_commands(path: Path) -> list[tuple[int, str]]:
    """(line, command template) of every ``shell:`` directive of a Snakemake file."""
    lines = path.read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)shell:\s*(.*)$", line)
        if not m:
            continue
        indent, body = len(m[1]), [m[2]]
        for nxt in lines[i + 1:]:
            if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                break
            body.append(nxt)
        out.append((i + 1, ast.literal_eval("(\n" + "\n".join(body) + "\n)")))
    return out


def test_every_shell_placeholder_is_quoted():
    commands = [(f"{p.name}:{n}", cmd) for p in sorted((ROOT / "workflow" / "rules")
                                                       .glob("*.smk"))
                for n, cmd in shell_commands(p)]
    assert len(commands) >= 12, commands
    for where, cmd in commands:
        for _, field, spec, _ in string.Formatter().parse(cmd):
            if field is None:
                continue
            root = re.split(r"[.\[]", field)[0]
            assert spec == "q" or root in UNQUOTED_OK or field in UNQUOTED_COMMANDS, \
                f"{where}: {{{field}}} is not :q"
    for p in [ROOT / "Snakefile", *(ROOT / "workflow").rglob("*.smk")]:
        assert not re.search(r"\bshell\(", p.read_text()), f"{p}: shell() outside a directive"


def test_the_package_runs_no_shell():
    for path in _py_files("pixmim"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            assert name not in ("os.system", "os.popen"), f"{path}:{node.lineno}: {name}"
            for kw in node.keywords:
                assert not (kw.arg == "shell" and isinstance(kw.value, ast.Constant)
                            and kw.value.value), f"{path}:{node.lineno}: shell=True"
