"""Released checkpoints as runs (config key ``checkpoints``): each entry is a run of its own
name whose job of the entry's kind (pretrain, finetune, linear_probe) is the fetched file,
converted (no training), with nothing upstream of it, and every downstream stage consumes
it unchanged."""

import hashlib
import http.server
import json
import subprocess
import sys
import threading

import pytest
import yaml

from pixmim.config import ConfigError
from pixmim.workflow import (
    experiments_of,
    job_config,
    job_tags,
    load_config,
    stage_inputs,
    upstream,
    validate_config,
)
from tests.conftest import ROOT, tiny_overrides

CPU = "vit_cpu_patch8_64"


def entry(source, checksum, **over):
    return {"source": str(source), "checksum": checksum, "format": "mae", "kind": "pretrained",
            "method": "mae", "variant": "pixmim", "arch": CPU, "epochs": 800,
            "published": {"lin": 12.5}, **over}


def config_with(tmp_path, checkpoints, **over) -> dict:
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump({**tiny_overrides(tmp_path), "checkpoints": checkpoints,
                                    **over}))
    return load_config(path)


def test_a_pretrained_release_is_a_run_of_its_name_whose_pretraining_imports(tmp_path):
    config = config_with(tmp_path, {"rel_a": entry("weights/a.pth", "sha256:" + "0" * 64),
                                    "rel_ft": entry("weights/b.pth", None, kind="finetuned",
                                                    pretrained="rel_a")})
    validate_config(config)
    [exp] = experiments_of(config, "rel_a")
    # what the checkpoint is, in the paper's units (arch and epochs never mapped to CPU sizes)
    assert exp == f"mae-lowpass40-src_{CPU}_800e_rel-rel_a_s0"
    job = job_config(config, exp, "pretrain")
    fetched = f"{tmp_path}/results/checkpoints/rel_a/a.pth"  # shared by the run's seeds
    assert job["released"] == {"name": "rel_a", "file": fetched, "source": "weights/a.pth",
                               "checksum": "sha256:" + "0" * 64, "format": "mae",
                               "kind": "pretrained", "published": {"lin": 12.5}}
    assert job["train"] == {"device": "cpu", "seed": 0}  # no training: one process
    assert job["variant"]["target"] == "lowpass" and job["variant"]["radius"] == 40
    inputs = stage_inputs(config, exp, "pretrain")
    assert inputs["released"] == job["released"]["file"] and inputs["data"] == []
    assert job_tags(config, exp)["released"] == "rel_a"
    probe = job_config(config, exp, "linear_probe")
    assert probe["pretrain_dir"] == f"{tmp_path}/results/runs/{exp}/pretrain"
    assert "released" not in probe  # downstream stages consume it unchanged


def test_a_finetuned_or_probe_release_is_a_run_whose_own_stage_imports_with_nothing_upstream(
        tmp_path):
    config = config_with(tmp_path, {
        "rel_a": entry("a.pth", None),
        "rel_ft": entry("weights/ft.pth", None, kind="finetuned", pretrained="rel_a",
                        format="openmmlab", published={"ft": 83.5, "in_c": 51.7}),
        "rel_lin": entry("lin.pth", None, kind="linear_probe", pretrained="rel_a",
                         published={"lin": 67.5})})
    validate_config(config)
    [ft] = experiments_of(config, "rel_ft")
    [lin] = experiments_of(config, "rel_lin")
    assert ft == f"mae-lowpass40-src_{CPU}_800e_rel-rel_ft_s0" and lin.endswith("_rel-rel_lin_s0")
    job = job_config(config, ft, "finetune")
    fetched = f"{tmp_path}/results/checkpoints/rel_ft/ft.pth"
    assert job["released"] == {"name": "rel_ft", "file": fetched, "source": "weights/ft.pth",
                               "checksum": None, "format": "openmmlab", "kind": "finetuned",
                               "published": {"ft": 83.5, "in_c": 51.7}}
    # no training: no recipe, no epochs, one process; the evaluations' loader
    assert "pretrain_dir" not in job and "finetune" not in job
    assert job["train"] == {"device": "cpu", "batch_size": 64, "num_workers": 0, "seed": 0}
    inputs = stage_inputs(config, ft, "finetune")
    assert inputs["released"] == fetched and "upstream" not in inputs
    assert inputs["data"] == [f"{tmp_path}/results/data/synth"]  # its validation set
    for stage in ("robustness", "shape_bias"):  # consume the import unchanged
        job = job_config(config, ft, stage)
        assert job["finetune_dir"] == f"{tmp_path}/results/runs/{ft}/finetune"
        assert "released" not in job and upstream(config, stage, ft) == ["finetune"]
        assert "released" not in stage_inputs(config, ft, stage)
    probe = job_config(config, lin, "linear_probe")
    assert probe["released"]["kind"] == "linear_probe" and "pretrain_dir" not in probe
    assert "epochs" not in probe["train"] and upstream(config, "linear_probe", lin) == []
    assert "upstream" not in stage_inputs(config, lin, "linear_probe")
    # nothing was pretrained: no pretraining job, no probe of a classifier
    for exp, stage in ((ft, "pretrain"), (ft, "linear_probe"), (lin, "pretrain"),
                       (lin, "finetune")):
        with pytest.raises(ConfigError, match=f"released checkpoint .* it has no {stage} job"):
            job_config(config, exp, stage)
    # a pretrained release still has its whole chain
    [pre] = experiments_of(config, "rel_a")
    assert upstream(config, "robustness", pre) == ["finetune", "pretrain"]


def test_a_table_column_a_release_cannot_make_is_one_line(tmp_path):
    config = config_with(tmp_path, {
        "rel_ft": entry("ft.pth", None, kind="finetuned", published={"ft": 83.5})},
        tables={"tablex": {"title": "x", "reference": "published", "columns": ["ft", "lin"],
                           "rows": [{"label": "FT", "run": "rel_ft"}]}})
    with pytest.raises(ConfigError, match=r"tables\.tablex\.rows\.0\.run: 'rel_ft' is a "
                                          r"released finetuned checkpoint: it has no "
                                          r"linear_probe for column lin"):
        validate_config(config)


def test_a_release_named_as_a_run_or_a_missing_pretrained_reference_is_one_line(tmp_path):
    config = config_with(tmp_path, {"mae_800": entry("a.pth", None)})
    with pytest.raises(ConfigError, match=r"checkpoints\.mae_800: a released checkpoint is a "
                                          r"run of its own name"):
        validate_config(config)
    config = config_with(tmp_path, {"rel_ft": entry("b.pth", None, kind="finetuned",
                                                    pretrained="nosuch")})
    with pytest.raises(ConfigError, match=r"checkpoints\.rel_ft\.pretrained: no checkpoint "
                                          r"'nosuch'"):
        validate_config(config)
    config = config_with(tmp_path, {"rel_a": entry("a.pth", "sha256:abc")})
    with pytest.raises(ConfigError, match=r"checkpoints\.rel_a\.checksum"):
        validate_config(config)


def test_the_paper_with_its_releases_plans_fetch_then_import_then_the_probe(tmp_path):
    nocheck = tmp_path / "nocheck.yaml"
    nocheck.write_text(yaml.safe_dump({"data": {"check_roots": False},
                                       "results": str(tmp_path / "results")}))
    config = load_config("config/paper.yaml", "config/released.yaml", nocheck)
    [exp] = experiments_of(config, "pixmim_vit_base_800e")
    target = f"{tmp_path}/results/runs/{exp}/linear_probe/metrics.json"
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", target, "--configfile",
                          "config/paper.yaml", "config/released.yaml", str(nocheck)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    planned = {line.split()[1].rstrip(":") for line in res.stdout.splitlines()
               if line.startswith("rule ")}
    assert planned == {"fetch_checkpoint", "pretrain", "linear_probe", "init_mlflow"}
    job = yaml.safe_load((tmp_path / "results" / "jobs" / exp / "pretrain" /
                          "config.yaml").read_text())
    assert job["released"]["format"] == "openmmlab" and "epochs" not in job["train"]


def test_calibration_plans_fetch_import_and_our_recipes_and_no_pretraining(tmp_path):
    """`snakemake -n calibration` with the paper's config and its releases: each released
    pretrained checkpoint of the recipe tier (tablecal) fetched, imported, probed and
    fine-tuned; each released fine-tuned classifier of the evaluation tier (tablecalft)
    fetched, imported as its fine-tune and evaluated for robustness and shape bias, each
    released probe (tablecallin) fetched and imported as its probe: no pretraining and no
    training for those."""
    nocheck = tmp_path / "nocheck.yaml"
    nocheck.write_text(yaml.safe_dump({"data": {"check_roots": False},
                                       "results": str(tmp_path / "results")}))
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "calibration",
                          "--configfile", "config/paper.yaml", "config/released.yaml",
                          str(nocheck)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    counts = {}
    for line in res.stdout.splitlines():
        if line.startswith("rule "):
            rule = line.split()[1].rstrip(":")
            counts[rule] = counts.get(rule, 0) + 1
    config = load_config("config/paper.yaml", "config/released.yaml", nocheck)
    tables = config["tables"]
    rows, ft_rows, lin_rows = (tables[t]["rows"] for t in ("tablecal", "tablecalft",
                                                           "tablecallin"))
    assert len(ft_rows) == 7 and len(lin_rows) == 3
    assert counts == {"calibration": 1, "make_table": 3, "init_mlflow": 1,
                      "fetch_checkpoint": len(rows) + len(ft_rows) + len(lin_rows),
                      "pretrain": len(rows), "linear_probe": len(rows) + len(lin_rows),
                      "finetune": len(rows) + len(ft_rows), "evaluate": 2 * len(ft_rows)}
    jobs = tmp_path / "results" / "jobs"
    for row, stage in [(r, "finetune") for r in ft_rows] + [(r, "linear_probe")
                                                          for r in lin_rows]:
        [exp] = experiments_of(config, row["run"])  # evaluation tier: imported, not trained
        assert sorted(p.name for p in (jobs / exp).iterdir() if p.is_dir()) == sorted(
            {"finetune": ["finetune", "robustness", "shape_bias"],
             "linear_probe": ["linear_probe"]}[stage])  # no pretraining job
        job = yaml.safe_load((jobs / exp / stage / "config.yaml").read_text())
        assert job["released"]["name"] == row["run"]
        assert job["released"]["kind"] == config["checkpoints"][row["run"]]["kind"]
        assert "pretrain_dir" not in job and "epochs" not in job["train"]
        assert "gpus" not in job["train"] and "finetune" not in job
        if stage == "finetune":
            rob = yaml.safe_load((jobs / exp / "robustness" / "config.yaml").read_text())
            assert rob["finetune_dir"].endswith(f"/runs/{exp}/finetune")
    for row in rows:  # every pretraining is an import of its release
        [exp] = experiments_of(config, row["run"])
        job = yaml.safe_load((tmp_path / "results" / "jobs" / exp / "pretrain" /
                              "config.yaml").read_text())
        assert job["released"]["name"] == row["run"] and "epochs" not in job["train"]


def test_the_budget_costs_a_release_nothing_and_its_evaluations_as_a_run_of_ours(tmp_path):
    from pixmim.workflow.budget import budget

    nocheck = tmp_path / "nocheck.yaml"
    nocheck.write_text(yaml.safe_dump({"results": str(tmp_path / "results")}))
    config = load_config("config/paper.yaml", "config/released.yaml", nocheck)
    rows = budget(config, ["tablecal"])["targets"]["tablecal"]
    pre = [r for r in rows if r["stage"] == "pretrain"]
    assert len(pre) == 8 and all(r["gpu_hours"] == 0.0 for r in pre)
    assert all(r["basis"].startswith("released checkpoint ") for r in pre)
    # a release's probe costs what the probe of the same run pretrained here costs
    paper = load_config("config/paper.yaml", nocheck)
    ours = {(r["experiment"].split("_rel-")[0], r["stage"]): r["gpu_hours"] for r in rows}
    mine = {(r["experiment"].rsplit("_s", 1)[0], r["stage"]): r["gpu_hours"]
            for r in budget(paper, ["table2"])["targets"]["table2"]}
    key = ("mae-lowpass40-src_vit_base_patch16_224_800e", "linear_probe")
    assert ours[key] == pytest.approx(mine[key]) and ours[key] > 0


def test_the_budget_costs_the_evaluation_tier_as_inference_on_val_only(tmp_path):
    """A released fine-tune or probe: one forward pass over ImageNet val (50,000 images), no
    training, no pretraining; the robustness and shape bias of the classifiers as ours."""
    from pixmim.workflow.budget import budget

    nocheck = tmp_path / "nocheck.yaml"
    nocheck.write_text(yaml.safe_dump({"results": str(tmp_path / "results")}))
    config = load_config("config/paper.yaml", "config/released.yaml", nocheck)
    paper = load_config("config/paper.yaml", nocheck)
    mine = {(r["experiment"].rsplit("_s", 1)[0], r["stage"]): r
            for r in budget(paper, ["table4"])["targets"]["table4"]}
    result = budget(config, ["tablecalft", "tablecallin"])["targets"]
    ft, lin = result["tablecalft"], result["tablecallin"]
    assert {r["stage"] for r in ft} == {"finetune", "robustness", "shape_bias"}
    assert {r["stage"] for r in lin} == {"linear_probe"}
    for r in ft + lin:
        assert r["gpus_per_node"] == 1 and r["nodes"] == 1 and r["gpu_hours"] > 0
    imports = [r for r in ft + lin if r["stage"] in ("finetune", "linear_probe")]
    assert all("evaluated, not trained" in r["basis"] for r in imports)
    # a forward over 50,000 images, against the robustness sets' 3,838,389 (same model)
    hours = {(r["experiment"], r["stage"]): r["gpu_hours"] for r in ft}
    for exp in {r["experiment"] for r in ft}:
        assert hours[exp, "finetune"] == pytest.approx(
            hours[exp, "robustness"] * 50_000 / 3_838_389, rel=1e-6)
    # the robustness of a released classifier costs what that of our own fine-tune does
    [rel] = experiments_of(config, "mae_vit_base_1600e_ft")
    [own] = experiments_of(paper, "mae_800")
    ours = {(r["experiment"], r["stage"]): r["gpu_hours"] for r in ft}
    assert ours[rel, "robustness"] == pytest.approx(mine[own.rsplit("_s", 1)[0],
                                                         "robustness"]["gpu_hours"])


def test_a_calibration_row_reads_its_checkpoints_published_numbers(tmp_path):
    """Ours beside the authors' numbers for the same file, the difference with the interval
    over seeds (values written here, by hand)."""
    from pixmim.report.tables import build_table, to_markdown

    files = []
    for seed, top1 in enumerate((60.0, 62.0)):
        f = tmp_path / f"s{seed}.json"
        f.write_text(json.dumps({"top1_best": top1}))
        files.append(str(f))
    spec = {"table": "tablecal", "title": "Calibration", "reference": "published",
            "seeds": [0, 1], "rows": [{
                "label": "PixMIM 800e", "experiment": "x", "experiments": ["x_s0", "x_s1"],
                "published": {"lin": 67.5},
                "cells": {"lin": {"files": files, "key": "top1_best", "header": "lin (%)"}}}]}
    df = build_table(spec)
    assert df["lin_published"][0] == 67.5 and "lin_paper" not in df
    assert df["lin_ours_minus_published"][0] == pytest.approx(61.0 - 67.5)
    # two seeds 60, 62: t(0.975, 1) * sd / sqrt(2) = 12.706 * 1.414 / 1.414
    assert df["lin_ours_ci95"][0] == pytest.approx(12.706, abs=1e-3)
    md = to_markdown(df, spec)
    assert "lin (%) ours (published)" in md and "61.0 ± 12.7 (67.5)" in md
    assert "lin (%) ours - published" in md and "-6.5 ± 12.7" in md


def test_a_calibration_row_must_be_a_released_checkpoint(tmp_path):
    config = config_with(tmp_path, {"rel_a": entry("a.pth", None)}, tables={
        "tablecal": {"title": "c", "reference": "published", "columns": ["lin"],
                     "rows": [{"label": "MAE", "run": "mae_800"}]}}, targets=["tablecal"])
    with pytest.raises(ConfigError, match=r"tables\.tablecal\.rows\.0\.run: 'mae_800' is no "
                                          r"released checkpoint"):
        validate_config(config)


# ------------------------------------------------------------------ end to end, toy size
class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served(tmp_path):
    """A loopback HTTP server over ``tmp_path / "served"``; yields its base URL."""
    root = tmp_path / "served"
    root.mkdir()
    srv = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a, **k: _Files(*a, directory=str(root), **k))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", root
    srv.shutdown()
    srv.server_close()


def _pretrained_releases(tmp_path, url, root):
    """A full facebookresearch/mae-layout pretraining (a local file) and its encoder-only
    release (served): their entries, and the check of their imports and probes."""
    import torch

    from pixmim.models import create_model

    torch.manual_seed(0)
    model = create_model("mae", CPU)
    full = {k: v.clone() for k, v in model.state_dict().items()}
    encoder = {k: v for k, v in full.items() if not k.startswith(("decoder_", "mask_token"))}
    local = tmp_path / "mae_full.pth"
    torch.save({"model": full}, local)  # facebookresearch/mae's layout, with its decoder
    torch.save({"model": encoder}, root / "mae_encoder.pth")  # its encoder-only release
    sha = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
           for p in (local, root / "mae_encoder.pth")}
    entries = {
        "rel_local": entry(local, f"sha256:{sha['mae_full.pth']}"),
        "rel_url": entry(f"{url}/mae_encoder.pth", f"sha256:{sha['mae_encoder.pth'][:8]}",
                         variant="base", epochs=1600)}

    def targets(config, results):
        return [f"{results}/runs/{experiments_of(config, n)[0]}/linear_probe/metrics.json"
                for n in entries]

    def check(config, results):
        for name in entries:
            exp = experiments_of(config, name)[0]
            pre = results / "runs" / exp / "pretrain"
            metrics = json.loads((pre / "metrics.json").read_text())
            assert metrics["epochs"] == 0 and metrics["released"]["name"] == name
            assert metrics["released"]["encoder_only"] is (name == "rel_url")
            ckpt = torch.load(pre / "checkpoint.pth", weights_only=True)
            want = full if name == "rel_local" else encoder
            assert set(ckpt["model"]) == set(want)  # no decoder invented for the encoder-only
            assert all(torch.equal(ckpt["model"][k], want[k]) for k in want)
            probe = json.loads((results / "runs" / exp / "linear_probe" / "metrics.json"
                                ).read_text())
            assert 0 <= probe["top1_best"] <= 100
        assert (results / "checkpoints" / "rel_url" / "mae_encoder.pth").is_file()

    return entries, targets, check


def _top1(model, root, img_size) -> float:
    """Top-1 (%) of ``model`` (images -> logits) over ``root/val/<wnid>/*.png``, computed
    here: torchvision's resize to img_size / 0.875 and centre crop, the ImageNet
    normalisation, the wnid's ImageNet-1k index as the label."""
    import torch
    import torchvision.transforms as T
    from PIL import Image
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    from pixmim.data.imagenet_meta import imagenet_wnids

    tf = T.Compose([T.Resize(int(img_size / 0.875), interpolation=T.InterpolationMode.BICUBIC),
                    T.CenterCrop(img_size), T.ToTensor(),
                    T.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)])
    files = sorted((root / "val").glob("*/*.png"))
    x = torch.stack([tf(Image.open(f).convert("RGB")) for f in files])
    y = torch.tensor([imagenet_wnids().index(f.parent.name) for f in files])
    with torch.no_grad():
        hits = (model(x).argmax(1) == y).sum().item()
    assert len(files) > 0
    return 100.0 * hits / len(files)


def _evaluation_releases(tmp_path, url, root):
    """Released classifier (OpenMMLab layout, served on 127.0.0.1) and probe (MAE's layout,
    a local file): fetched, imported, their top-1 that of the same weights evaluated here
    with timm's ViT; the classifier's robustness and shape bias run on the import; no
    pretraining, no training."""
    import torch
    from timm.models.vision_transformer import VisionTransformer

    from pixmim.data.generate.synth import IMAGENET_INDEX
    from pixmim.families.vit.formats import from_ours

    def vit(**kw):  # timm's ViT at the tiny arch: our keys (the family's classifier is one)
        return VisionTransformer(img_size=64, patch_size=8, embed_dim=64, depth=4,
                                 num_heads=4, **kw).eval()

    torch.manual_seed(0)
    ours = list(IMAGENET_INDEX.values())  # the synthetic classes: predictions among them
    ft = vit(num_classes=1000, global_pool="avg")
    enc = vit(num_classes=0, global_pool="token")
    bn = torch.nn.BatchNorm1d(64, affine=False, eps=1e-6).eval()  # MAE / mmpretrain's eps
    lin = torch.nn.Linear(64, 1000)
    with torch.no_grad():
        for head in (ft.head, lin):
            head.weight.normal_(0, 1)
            head.bias.fill_(-100.0)
            head.bias[ours] = 0.0
        bn.running_mean.normal_(0, 0.1)
        bn.running_var.uniform_(0.5, 2.0)
    torch.save(from_ours(ft.state_dict(), "openmmlab", "finetuned", "mae"), root / "ft.pth")
    probe = {**enc.state_dict(), **{f"head.0.{k}": v for k, v in bn.state_dict().items()},
             **{f"head.1.{k}": v for k, v in lin.state_dict().items()}}
    local = tmp_path / "probe.pth"
    torch.save({"model": probe}, local)  # main_linprobe.py's model: head = (BN, Linear)
    sha = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (root / "ft.pth", local)}
    entries = {
        "rel_ft": entry(f"{url}/ft.pth", f"sha256:{sha['ft.pth']}", kind="finetuned",
                        format="openmmlab", published={"ft": 50.0}),
        "rel_lin": entry(local, f"sha256:{sha['probe.pth']}", kind="linear_probe",
                         published={"lin": 50.0})}

    def targets(config, results):
        ft_exp, lin_exp = (experiments_of(config, n)[0] for n in ("rel_ft", "rel_lin"))
        return [*(f"{results}/runs/{ft_exp}/{s}/metrics.json"
                  for s in ("robustness", "shape_bias")),
                f"{results}/runs/{lin_exp}/linear_probe/metrics.json"]

    def check(config, results):
        ft_exp, lin_exp = (experiments_of(config, n)[0] for n in ("rel_ft", "rel_lin"))
        _check_evaluated(results, ft_exp, lin_exp, config["data"]["img_size"], ft, enc, bn, lin)

    return entries, targets, check


def _check_evaluated(results, ft_exp, lin_exp, size, ft, enc, bn, lin):
    import torch

    data = results / "data" / "synth"
    got = json.loads((results / "runs" / ft_exp / "finetune" / "metrics.json").read_text())
    assert got["epochs"] == 0 and got["released"]["name"] == "rel_ft"
    assert got["top1_best"] == pytest.approx(_top1(ft, data, size), abs=1e-9)
    assert 0 < got["top1_best"] < 100  # predictions that depend on the weights
    saved = torch.load(results / "runs" / ft_exp / "finetune" / "model.pth", weights_only=True)
    assert saved["meta"]["released"]["name"] == "rel_ft" and saved["meta"]["num_classes"] == 1000
    for stage in ("robustness", "shape_bias"):
        assert (results / "runs" / ft_exp / stage / "metrics.json").is_file()
    got = json.loads((results / "runs" / lin_exp / "linear_probe" / "metrics.json").read_text())
    assert got["epochs"] == 0 and got["released"]["name"] == "rel_lin"
    want = _top1(lambda x: lin(bn(enc.forward_head(enc.forward_features(x), pre_logits=True))),
                 data, size)
    assert got["top1_best"] == pytest.approx(want, abs=1e-9) and 0 < want < 100
    for exp in (ft_exp, lin_exp):  # nothing pretrained, nothing trained
        assert not (results / "runs" / exp / "pretrain").exists()


@pytest.mark.slow
def test_releases_of_every_kind_run_through_the_dag(tmp_path, served):
    """One DAG: two pretrained releases (a local full file, a served encoder-only one)
    fetched, imported and probed; a served classifier and a local probe evaluated as they
    are, the classifier's robustness and shape bias run on the import. Nothing trained
    upstream of any release."""
    url, root = served
    parts = [_pretrained_releases(tmp_path, url, root), _evaluation_releases(tmp_path, url, root)]
    config = config_with(tmp_path, {k: v for entries, _, _ in parts for k, v in entries.items()})
    results = tmp_path / "results"
    targets = [t for _, targets, _ in parts for t in targets(config, results)]
    res = subprocess.run([sys.executable, "-m", "snakemake", *targets, "--workflow-profile",
                          "profiles/ci", "--configfile", str(tmp_path / "overlay.yaml")],
                         cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    for _, _, check in parts:
        check(config, results)
    assert not list((results / "runs").glob("*/*/last.pth"))  # nothing was trained


@pytest.mark.parametrize("case", ["pretrained_as_finetuned", "classes", "classifier_as_probe",
                                  "probe_classes"])
def test_a_release_that_does_not_fit_its_declaration_fails_naming_the_keys(tmp_path, case):
    """A pretrained file declared as fine-tuned, a head of another class count (classifier,
    probe), a classifier declared as a probe: the import job fails with one line naming the
    keys, and writes nothing (never a random head)."""
    import torch

    from pixmim import families
    from pixmim.config import load_job_config
    from pixmim.families.vit.formats import from_ours
    from pixmim.families.vit.nets import classifier
    from pixmim.models import create_model
    from pixmim.stages import finetune, linear_probe

    kind, stage = (("linear_probe", "linear_probe") if "probe" in case
                   else ("finetuned", "finetune"))
    config = config_with(tmp_path, {"rel": entry("rel.pth", None, kind=kind,
                                                 format="openmmlab")})
    [exp] = experiments_of(config, "rel")
    job = job_config(config, exp, stage)
    if case == "pretrained_as_finetuned":
        theirs = from_ours(create_model("mae", CPU).state_dict(), "openmmlab", "pretrained",
                           "mae")
        want = r"missing 4 \(fc_norm.bias, fc_norm.weight, head.bias, head.weight\)"
    elif case == "probe_classes":
        state = {k: v for k, v in create_model("mae", CPU).state_dict().items()
                 if not k.startswith(families.pretrain_only("mae"))}
        head = torch.nn.Sequential(torch.nn.BatchNorm1d(64, affine=False),
                                   torch.nn.Linear(64, 10))
        state.update({f"head.{k}": v for k, v in head.state_dict().items()})
        theirs = from_ours(state, "openmmlab", "linear_probe", "mae")
        want = r"shapes 2 \(head.1.bias \[10\] != \[1000\], head.1.weight \[10, 64\]"
    else:
        n = 10 if case == "classes" else 1000
        state = classifier(families.arch("mae", CPU), num_classes=n).state_dict()
        theirs = from_ours(state, "openmmlab", "finetuned", "mae")
        want = (r"shapes 2 \(head.bias \[10\] != \[1000\], head.weight \[10, 64\] != "
                r"\[1000, 64\]\)" if case == "classes" else
                r"missing 7 \(head.0.num_batches_tracked.*unexpected 4 \(backbone.ln2.bias")
    path = tmp_path / "results" / "checkpoints" / "rel" / "rel.pth"
    path.parent.mkdir(parents=True)
    torch.save(theirs, path)
    cfg_file = tmp_path / "job.yaml"
    cfg_file.write_text(yaml.safe_dump(job))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match=want) as err:
        {"finetune": finetune, "linear_probe": linear_probe}[stage].run(
            load_job_config(cfg_file), out)
    assert "\n" not in str(err.value) and f"checkpoints.rel, declared {kind}" in str(err.value)
    assert not list(out.iterdir())
