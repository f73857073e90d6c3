"""The method and stage registries (pixmim.registry): the built-in declarations, reading them
without importing torch, plugin modules, the errors a bad declaration gives, and the CLI
built on them."""

import os
import re
import subprocess
import sys
import textwrap

import pytest

from pixmim import registry
from pixmim.__main__ import TOOLS
from pixmim.registry import RegistryError
from tests.conftest import ROOT

METHODS = {"mae": "vit", "mff": "vit", "lsmae": "vit", "convmae": "convvit"}
STAGES = {"pretrain", "linear_probe", "finetune", "finetune_1pct", "finetune_10pct",
          "robustness", "shape_bias", "frequency", "segment_ade20k", "detect_coco",
          "detect_coco_2x"}
COLUMNS = {"lin": "linear_probe", "ft": "finetune", "fs1": "finetune_1pct",
           "fs10": "finetune_10pct", "in_c": "robustness", "in_a": "robustness",
           "in_r": "robustness", "in_s": "robustness", "miou": "segment_ade20k",
           "ap_box": "detect_coco", "ap_mask": "detect_coco", "ap_box_2x": "detect_coco_2x",
           "ap_mask_2x": "detect_coco_2x"}
# A method declaration that is plain data (the arch table borrowed from a built-in module).
GOOD_METHOD = """
from pixmim.models.mae import ARCHS as VIT_ARCHS

raise SystemExit("the registry must read this module, not run it")

ARCHS = {"tiny": VIT_ARCHS["vit_cpu_patch8_64"]}
METHOD = dict(name="{name}", model="MyMAE", family="vit", archs=ARCHS)
"""


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}


def clear_caches() -> None:
    for f in (registry._reader, registry._methods, registry._stages):
        f.cache_clear()


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A folder on sys.path for plugin modules; the registry's caches cleared around the test."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_PLUGINS", ())
    clear_caches()
    yield tmp_path
    clear_caches()


def write(folder, name: str, source: str) -> str:
    (folder / f"{name}.py").write_text(textwrap.dedent(source).lstrip())
    return name


# ------------------------------------------------------------------ built-in declarations
def test_builtin_methods_and_families():
    table = registry.methods()
    assert {n: m.family for n, m in table.items()} == METHODS
    for name, spec in table.items():
        assert spec.module == f"pixmim.models.{name}"
        assert spec.archs, name
    assert registry.families() == ["convvit", "vit"]
    # a name imported from another declaring module, subscripted, extended by dict(...)
    vit = table["mae"].archs["vit_cpu_patch8_64"]
    assert table["lsmae"].archs["vit_cpu_patch8_64"] == {**vit, "mask_unit": 2}
    assert table["mff"].archs["vit_cpu_patch8_64"] == {**vit, "fusion_layers": (0, 1, 2, 3)}


def test_builtin_stages_columns_and_order():
    table = registry.stages()
    assert set(table) == STAGES
    assert next(iter(table)) == "pretrain"  # pretraining first, its consumers after it
    order = list(table)
    for name, spec in table.items():
        assert spec.module.startswith("pixmim.stages."), name
        assert spec.outputs[-1] == "metrics.json", name
        if spec.consumes is not None:
            assert order.index(spec.consumes) < order.index(name), name
    assert {n for n, s in table.items() if s.rule == "evaluate"} == {
        "robustness", "shape_bias", "frequency"}
    assert {c: col.stage for c, col in registry.columns().items()} == COLUMNS


def test_unknown_names_list_the_registered_ones():
    with pytest.raises(KeyError, match="unknown method 'nope'.*mae"):
        registry.method("nope")
    with pytest.raises(KeyError, match="unknown stage 'nope'.*pretrain"):
        registry.stage("nope")


def test_reading_the_registry_imports_no_torch():
    code = ("import sys; from pixmim import registry; registry.stages(); registry.methods(); "
            "registry.columns(); assert 'torch' not in sys.modules, 'torch imported'")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, env=env())
    assert res.returncode == 0, res.stderr


# ------------------------------------------------------------------ plugins
def test_plugin_method_is_read_without_running_it(plugin_dir):
    write(plugin_dir, "regtest_good", GOOD_METHOD.replace("{name}", "mymae"))
    table = registry.methods(plugins=["regtest_good"])
    assert set(table) == set(METHODS) | {"mymae"}
    spec = table["mymae"]
    assert (spec.module, spec.model, spec.family) == ("regtest_good", "MyMAE", "vit")
    assert spec.archs == {"tiny": registry.method("mae").archs["vit_cpu_patch8_64"]}
    assert "regtest_good" not in sys.modules
    # the process's plugins (a job's config) apply when none are passed
    assert "mymae" not in registry.methods()
    registry.use_plugins(["regtest_good"])
    assert "mymae" in registry.methods()


def test_plugin_read_in_a_fresh_process_imports_no_torch(tmp_path):
    write(tmp_path, "regtest_fresh", GOOD_METHOD.replace("{name}", "freshmae"))
    code = ("import sys; from pixmim import registry; "
            "assert 'freshmae' in registry.methods(plugins=['regtest_fresh']); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, env={**env(), "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"})
    assert res.returncode == 0, res.stderr


def test_names_are_read_as_bound_at_that_point(plugin_dir):
    """An annotated declaration counts, and a name rebound from an imported one reads the
    import (as Python would), not itself."""
    write(plugin_dir, "regtest_rebind", """
        from typing import Any

        from pixmim.models.mae import ARCHS

        ARCHS = {**ARCHS, "extra": dict(ARCHS["vit_cpu_patch8_64"], depth=1)}
        FAMILY = "convvit"
        METHOD: dict[str, Any] = dict(name="rebind", model="M", family=FAMILY, archs=ARCHS)
        FAMILY = "vit"  # rebound after the declaration: the declaration keeps "convvit"
        """)
    spec = registry.method("rebind", plugins=["regtest_rebind"])
    mae = registry.method("mae").archs
    assert spec.archs == {**mae, "extra": {**mae["vit_cpu_patch8_64"], "depth": 1}}
    assert spec.family == "convvit"


def test_plugin_stage_adds_its_column(plugin_dir):
    write(plugin_dir, "regtest_stage", """
        COLS = {"knn_t": ("top1", "kNN (%)")}
        STAGES = [dict(name="knn_t", help="kNN probe", rule="knn", job="options",
                       section="knn_t", columns=COLS, outputs=["metrics.json"])]
        """)
    spec = registry.stage("knn_t", plugins=["regtest_stage"])
    assert (spec.module, spec.rule, spec.consumes, spec.outputs) == (
        "regtest_stage", "knn", "pretrain", ("metrics.json",))
    assert registry.columns(plugins=["regtest_stage"])["knn_t"] == registry.Column(
        "knn_t", "knn_t", "top1", "kNN (%)")


@pytest.mark.parametrize("declaration", [
    "METHOD = make()",
    "METHOD = dict(name='callm', model='M', family='vit', archs=make_archs())",
    "METHOD = dict(name='attrm', model='M', family='vit', archs=os.environ)",
    "METHOD = dict(name='lambdam', model='M', family='vit', archs={'a': lambda: 1})",
])
def test_a_declaration_that_is_not_data_names_the_file(plugin_dir, declaration):
    write(plugin_dir, "regtest_code", f"import os\n\n\ndef make():\n    return {{}}\n\n\n"
                                      f"{declaration}\n")
    path = plugin_dir / "regtest_code.py"
    with pytest.raises(RegistryError,
                       match=rf"{re.escape(str(path))}:8: a declaration holds only data"):
        registry.methods(plugins=["regtest_code"])


def test_a_name_bound_nowhere_names_the_file(plugin_dir):
    write(plugin_dir, "regtest_unbound", "METHOD = dict(name='u', model='M', family='vit', "
                                         "archs=ARCHS)\n")
    with pytest.raises(RegistryError, match=r"regtest_unbound.py: no top-level data named "
                                            r"'ARCHS'"):
        registry.methods(plugins=["regtest_unbound"])


def test_a_malformed_method_names_the_module(plugin_dir):
    write(plugin_dir, "regtest_malformed", "METHOD = dict(name='m', model='M', archs={})\n")
    with pytest.raises(RegistryError, match=r"regtest_malformed.METHOD: .*family"):
        registry.methods(plugins=["regtest_malformed"])


def test_duplicate_names_are_refused(plugin_dir):
    write(plugin_dir, "regtest_dup", "METHOD = dict(name='mae', model='M', family='vit', "
                                     "archs={})\n")
    with pytest.raises(RegistryError, match=r"method 'mae' declared twice \(pixmim.models.mae, "
                                            r"regtest_dup\)"):
        registry.methods(plugins=["regtest_dup"])
    write(plugin_dir, "regtest_dupstage", "STAGES = [dict(name='finetune', help='h', "
                                          "rule='r')]\n")
    with pytest.raises(RegistryError, match="stage 'finetune' declared twice"):
        registry.stages(plugins=["regtest_dupstage"])
    write(plugin_dir, "regtest_dupcol", "STAGES = [dict(name='dupcol', help='h', rule='r', "
                                        "columns={'lin': ('top1', 'lin')})]\n")
    with pytest.raises(RegistryError, match="column 'lin' declared by linear_probe and dupcol"):
        registry.columns(plugins=["regtest_dupcol"])


@pytest.mark.parametrize("module", ["regtest_missing", "pixmim.regtest_missing",
                                    "regtest_nopkg.methods.mymae"])
def test_a_missing_plugin_module_is_a_registry_error(plugin_dir, module):
    with pytest.raises(RegistryError, match=rf"plugin module '{module}' not found"):
        registry.methods(plugins=[module])


# ------------------------------------------------------------------ the CLI
def cli(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pixmim", *args], cwd=cwd,
                          capture_output=True, text=True, env=env())


def test_cli_help_lists_every_stage_and_tool():
    res = cli("--help")
    assert res.returncode == 0, res.stderr
    table = res.stdout.split("commands:\n")[1].split("\n\n")[0]
    listed = [line.split()[0].replace("-", "_") for line in table.splitlines()]
    assert listed == [*registry.stages(), *(t.replace("-", "_") for t in TOOLS)]
    assert set(listed) == STAGES | {t.replace("-", "_") for t in TOOLS}
    for name, spec in registry.stages().items():
        assert f"  {name.replace('_', '-'):<15} {spec.help}" in res.stdout


def test_cli_run_with_a_missing_config_is_one_line_naming_it(tmp_path):
    missing = tmp_path / "missing.yaml"
    res = cli("run", "--config", str(missing), "--out", str(tmp_path / "x"), cwd=tmp_path)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        f"pixmim run: error: config file not found: {missing}"]
    assert not (tmp_path / "x").exists()


def test_a_plugin_that_declares_nothing_or_does_not_parse_is_named(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "nodecl.py").write_text("ARCHS = {}\n")
    (tmp_path / "broken.py").write_text("METHOD = dict(name='x'\n")
    for clear in (registry._reader, registry._methods, registry._stages):
        clear.cache_clear()
    with pytest.raises(registry.RegistryError, match="declares neither METHOD nor STAGES"):
        registry.methods(plugins=["nodecl"])
    with pytest.raises(registry.RegistryError, match=r"broken\.py:1"):
        registry.methods(plugins=["broken"])
