"""The method and stage registries (pixmim.registry): the built-in declarations (plain data in
pixmim.methods and pixmim.pipeline), plugin modules, the one-line errors a bad declaration
gives, the DAG's declarations read without torch, and the CLI built on them."""

import os
import subprocess
import sys
import textwrap

import pytest

from pixmim import registry
from pixmim.__main__ import TOOLS
from pixmim.declare import JOB_KINDS, RegistryError
from pixmim.workflow import jobs
from tests.conftest import ROOT

# Transcribed from the paper's methods (Sec. 4: MAE, MFF, LSMAE are ViTs; ConvMAE is a
# hybrid conv + ViT) and its evaluations (Tables 2, 4, 18, 19; Figures 1, 5, 8).
METHODS = {"mae": "vit", "mff": "vit", "lsmae": "vit", "convmae": "convvit"}
STAGES = {"pretrain", "linear_probe", "finetune", "finetune_1pct", "finetune_10pct",
          "robustness", "shape_bias", "frequency", "segment_ade20k", "detect_coco",
          "detect_coco_2x"}
COLUMNS = {"lin": "linear_probe", "ft": "finetune", "fs1": "finetune_1pct",
           "fs10": "finetune_10pct", "in_c": "robustness", "in_a": "robustness",
           "in_r": "robustness", "in_s": "robustness", "miou": "segment_ade20k",
           "ap_box": "detect_coco", "ap_mask": "detect_coco", "ap_box_2x": "detect_coco_2x",
           "ap_mask_2x": "detect_coco_2x", "shape": "shape_bias"}
# A user's method: a torch-free declaring module that names its class in another module.
GOOD_METHOD = """
from pixmim.declare import Method
from pixmim.methods import VIT_CPU

METHODS = [Method(name="{name}", model="{name}_model:MyMAE", family="vit",
                  archs={"tiny": VIT_CPU})]
"""
GOOD_MODEL = """
raise SystemExit("the registry must not import a method's class")
"""


def env(*extra) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [*map(str, extra), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A folder on sys.path for plugin modules; the registry's caches and the imported plugin
    modules cleared around the test."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_PLUGINS", ())
    before = set(sys.modules)
    registry._methods.cache_clear(), registry._stages.cache_clear()
    yield tmp_path
    registry._methods.cache_clear(), registry._stages.cache_clear()
    for name in set(sys.modules) - before:
        if name.startswith("regtest"):
            del sys.modules[name]


def write(folder, name: str, source: str) -> str:
    (folder / f"{name}.py").write_text(textwrap.dedent(source).lstrip())
    return name


def error(plugin_dir, source: str, kind: str = "methods") -> str:
    """The one-line error a plugin module with ``source`` gives."""
    name = write(plugin_dir, f"regtest_bad{abs(hash(source)) % 10**8}", source)
    with pytest.raises(RegistryError) as err:
        getattr(registry, kind)(plugins=[name])
    message = str(err.value)
    assert "\n" not in message, message
    return message


# ------------------------------------------------------------------ built-in declarations
def test_builtin_methods_and_families():
    table = registry.methods()
    assert {n: m.family for n, m in table.items()} == METHODS
    for name, spec in table.items():
        assert spec.module == f"pixmim.models.{name}" and spec.source == "pixmim.methods"
        assert spec.archs, name
    assert registry.families() == ["convvit", "vit"]
    # the paper archs of each method (Tables 2, 16: ViT-S/B/L; MFF ViT-B; LSMAE ViT-B at
    # 448; ConvMAE-B) beside a CPU arch
    assert {n: sorted(a for a in m.archs if "cpu" not in a) for n, m in table.items()} == {
        "mae": ["vit_base_patch16_224", "vit_large_patch16_224", "vit_small_patch16_224"],
        "mff": ["vit_base_patch16_224"], "lsmae": ["vit_base_patch16_448"],
        "convmae": ["convvit_base_224"]}
    vit = table["mae"].archs["vit_cpu_patch8_64"]
    assert table["lsmae"].archs["vit_cpu_patch8_64"] == {**vit, "mask_unit": 2}
    assert table["mff"].archs["vit_cpu_patch8_64"] == {**vit, "fusion_layers": (0, 1, 2, 3)}


def test_every_declared_class_and_stage_module_exists():
    for name in registry.methods():
        assert isinstance(registry.model_class(name), type), name
    for name in registry.stages():
        mod = registry.stage_module(name)
        assert callable(mod.run) and callable(mod.main), name


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


def test_declared_job_kinds_are_the_ones_the_workflow_resolves():
    assert set(JOB_KINDS) == set(jobs.JOB_KINDS)


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
def test_a_plugin_method_is_imported_but_not_its_class(plugin_dir):
    write(plugin_dir, "regtest_good", GOOD_METHOD.replace("{name}", "regtest_good"))
    write(plugin_dir, "regtest_good_model", GOOD_MODEL)
    table = registry.methods(plugins=["regtest_good"])
    assert set(table) == set(METHODS) | {"regtest_good"}
    spec = table["regtest_good"]
    assert (spec.module, spec.class_name, spec.family, spec.source) == (
        "regtest_good_model", "MyMAE", "vit", "regtest_good")
    assert spec.archs == {"tiny": registry.method("mae").archs["vit_cpu_patch8_64"]}
    assert "regtest_good_model" not in sys.modules
    # the process's plugins (a job's config) apply when none are passed
    assert "regtest_good" not in registry.methods()
    registry.use_plugins(["regtest_good"])
    assert "regtest_good" in registry.methods()


def test_the_toy_plugins_are_read_in_a_fresh_process_without_torch(tmp_path):
    """The DAG of a config with plugins builds without torch when the plugins' declaring
    modules are torch-free (as the toy ones are, their classes in other modules)."""
    write(tmp_path, "regtest_fresh", GOOD_METHOD.replace("{name}", "regtest_fresh"))
    plugins = ["regtest_fresh", "tests.plugins.toy_mae", "tests.plugins.toy_simmim",
               "tests.plugins.knn_probe"]
    code = ("import sys; from pixmim import registry; "
            f"assert 'regtest_fresh' in registry.methods(plugins={plugins}); "
            f"assert 'knn_probe' in registry.stages(plugins={plugins}); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, env=env(tmp_path))
    assert res.returncode == 0, res.stderr


def test_plugin_stage_adds_its_column(plugin_dir):
    write(plugin_dir, "regtest_stage", """
        from pixmim.declare import Stage

        STAGES = [Stage(name="knn_t", module="regtest_stage_run", help="kNN probe",
                        rule="knn", job="options", section="knn_t",
                        columns={"knn_t": ["top1", "kNN (%)"]}, outputs=["metrics.json"])]
        """)
    spec = registry.stage("knn_t", plugins=["regtest_stage"])
    assert (spec.module, spec.rule, spec.consumes, spec.outputs, spec.source) == (
        "regtest_stage_run", "knn", "pretrain", ("metrics.json",), "regtest_stage")
    assert registry.columns(plugins=["regtest_stage"])["knn_t"] == registry.Column(
        "knn_t", "knn_t", "top1", "kNN (%)")


# ------------------------------------------------------------------ bad declarations
M = "from pixmim.declare import Method, Stage\n\n"


@pytest.mark.parametrize(("declaration", "line", "says"), [
    ("METHODS = [Method(name='m1', model='x:M', family='vit', archz={})]", 3,
     "unexpected keyword argument 'archz'"),
    ("METHODS = [Method(name='m2', model='x:M', archs={'a': {}})]", 3,
     "missing 1 required positional argument: 'family'"),
    ("METHODS = [Method(name='m3', model='MyMAE', family='vit', archs={'a': {}})]", 3,
     "method 'm3': model must be 'module:Class', got 'MyMAE'"),
    ("METHODS = [Method(name='m4', model='x:M', family='vit', archs={})]", 3,
     "method 'm4': archs must map each arch name"),
    ("METHODS = [Method(name='My-MAE', model='x:M', family='vit', archs={'a': {}})]", 3,
     "method 'My-MAE': name must be lower-case"),
    ("STAGES = [Stage(name='s1', module='x', help='h', rule='r', job='train2')]", 3,
     "stage 's1': job must be one of"),
    ("STAGES = [Stage(name='s2', module='x', help='h', rule='r', outputs=['a.pth'])]", 3,
     "stage 's2': outputs must end with metrics.json"),
    ("STAGES = [Stage(name='s3', module='x', help='h', rule='r', data='pixels')]", 3,
     "stage 's3': data must be one of"),
    ("STAGES = [Stage(name='s4', module='x', help='h', rule='r', cost={'kind': 'gpu'})]", 3,
     "stage 's4': cost kind must be one of"),
])
def test_a_bad_declaration_is_one_line_naming_its_file_and_line(plugin_dir, declaration,
                                                                line, says):
    message = error(plugin_dir, M + declaration + "\n")
    assert message.split(": ", 1)[0].endswith(f".py:{line}") and says in message, message


def test_declarations_must_be_a_list_of_the_declaration_type(plugin_dir):
    message = error(plugin_dir, "METHODS = [dict(name='d', model='x:M', family='vit', "
                                "archs={'a': {}})]\n")
    assert ".METHODS must be a list of Method(...)" in message, message
    message = error(plugin_dir, M + "METHODS = Method(name='d', model='x:M', family='vit', "
                                    "archs={'a': {}})\n")
    assert ".METHODS must be a list of Method(...)" in message, message


def test_a_plugin_that_declares_nothing_or_does_not_parse_is_named(plugin_dir):
    assert "declares neither METHODS nor STAGES" in error(plugin_dir, "ARCHS = {}\n")
    message = error(plugin_dir, "METHODS = [dict(name='x'\n")
    assert message.split(": ", 1)[0].endswith(".py:1"), message


def test_a_plugin_that_imports_something_missing_names_both(plugin_dir):
    message = error(plugin_dir, "import regtest_nosuchdep\n")
    assert message.startswith("plugin module 'regtest_bad") and "regtest_nosuchdep" in message


def test_duplicate_names_are_refused(plugin_dir):
    write(plugin_dir, "regtest_dup", M + "METHODS = [Method(name='mae', model='x:M', "
                                         "family='vit', archs={'a': {}})]\n")
    with pytest.raises(RegistryError, match=r"method 'mae' declared twice \(pixmim.methods, "
                                            r"regtest_dup\)"):
        registry.methods(plugins=["regtest_dup"])
    write(plugin_dir, "regtest_dupstage", M + "STAGES = [Stage(name='finetune', module='x', "
                                              "help='h', rule='r')]\n")
    with pytest.raises(RegistryError, match="stage 'finetune' declared twice"):
        registry.stages(plugins=["regtest_dupstage"])
    write(plugin_dir, "regtest_dupcol", M + "STAGES = [Stage(name='dupcol', module='x', "
                                            "help='h', rule='r', "
                                            "columns={'lin': ('top1', 'lin')})]\n")
    with pytest.raises(RegistryError, match="column 'lin' declared by linear_probe and dupcol"):
        registry.columns(plugins=["regtest_dupcol"])


@pytest.mark.parametrize("module", ["regtest_missing", "pixmim.regtest_missing",
                                    "regtest_nopkg.methods.mymae"])
def test_a_missing_plugin_module_is_a_registry_error(plugin_dir, module):
    with pytest.raises(RegistryError, match=rf"plugin module '{module}' not found"):
        registry.methods(plugins=[module])


def test_a_declared_class_that_is_missing_is_named_when_built(plugin_dir):
    write(plugin_dir, "regtest_noclass", GOOD_METHOD.replace("{name}", "regtest_noclass"))
    write(plugin_dir, "regtest_noclass_model", "class Other:\n    pass\n")
    registry.use_plugins(["regtest_noclass"])
    with pytest.raises(RegistryError, match="method 'regtest_noclass': regtest_noclass_model "
                                            "has no class 'MyMAE' "
                                            r"\(declared by regtest_noclass\)"):
        registry.model_class("regtest_noclass")


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
