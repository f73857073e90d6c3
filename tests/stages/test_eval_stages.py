"""The robustness and shape_bias stages end to end on tiny folder trees and real stimuli.

Hand-checkable numbers come from a stub classifier whose logits are read off the image
colour (``load_classifier`` is patched); plumbing runs use a saved random-weight tiny ViT.
"""

import csv
import json
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import yaml
from PIL import Image

from pixmim.__main__ import main as cli
from pixmim.config import load_job_config
from pixmim.data.imagenet_meta import imagenet_wnids
from pixmim.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from pixmim.evaluation import metrics as M
from pixmim.evaluation import shape_bias as SB
from pixmim.models.classifier import build_classifier, save_classifier
from pixmim.stages import common, robustness, shape_bias

STIMULI = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "geirhos-stimuli"
A_IDX = M.subset_indices("imagenet_a")
R_IDX = M.subset_indices("imagenet_r")
OUTSIDE = next(i for i in range(1000) if i not in set(A_IDX) | set(R_IDX))  # a distractor


class ColourStub(nn.Module):
    """Logits from the image's red level ``16 * k``: ``table[k]`` lists the winning indices.

    Every image also gets logit 10 at ``OUTSIDE`` (wins unsliced, loses when sliced away);
    the listed indices get 5, or 20 when ``dominant`` (beating ``OUTSIDE``).
    """

    def __init__(self, table: dict[int, list[int]], dominant: bool = False) -> None:
        super().__init__()
        self.table, self.value = table, 20.0 if dominant else 5.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = (x[:, 0].mean((1, 2)) * IMAGENET_STD[0] + IMAGENET_MEAN[0]) * 255
        logits = torch.zeros(len(x), 1000)
        logits[:, OUTSIDE] = 10.0
        for n, k in enumerate(torch.round(red / 16).long().tolist()):
            logits[n, self.table[k]] = self.value
        return logits


def png(path: Path, code: int = 0, size=(64, 64)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (16 * code, 90, 160)).save(path)


def job(tmp: Path, stage: str, finetune_dir: Path, tracking=None, **roots) -> Path:
    cfg = {"experiment": "mae-base_vit_cpu_patch8_64_1e", "stage": stage, "method": "mae",
           "arch": "vit_cpu_patch8_64", "data": {"img_size": 64},
           "finetune_dir": str(finetune_dir), "eval": {**roots, "batch_size": 16},
           "tracking": tracking or {"enabled": False}}
    path = tmp / f"{stage}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def finetune_dir(tmp_path_factory) -> Path:
    """A fine-tune output folder holding a random-weight tiny ViT classifier."""
    out = tmp_path_factory.mktemp("finetune")
    torch.manual_seed(0)
    model = build_classifier("mae", "vit_cpu_patch8_64", 1000)
    save_classifier(out / "model.pth", model, {"method": "mae", "arch": "vit_cpu_patch8_64",
                                               "num_classes": 1000, "global_pool": "avg"})
    return out


def stub(monkeypatch, model: nn.Module) -> None:
    monkeypatch.setattr(common, "load_classifier", lambda path, device: model)


def tiny_trees(root: Path) -> dict[str, Path]:
    """IN-C (every corruption: severities 1, 3, 5 right, 2, 4 wrong), IN-A 3/4, IN-R 2/3,
    IN-Sketch 2/3 right under :class:`ColourStub` with ``table = {k: [k-th index]}``."""
    w = imagenet_wnids()
    a, r = M.subset_wnids("imagenet_a"), M.subset_wnids("imagenet_r")
    for c in M.CORRUPTIONS:
        for s in range(1, 6):
            png(root / "c" / c / str(s) / w[OUTSIDE if s % 2 else 7] / "x.png", 1)
    png(root / "c" / "speckle_noise" / "1" / w[7] / "x.png", 1)  # an "extra": ignored
    png(root / "a" / a[0] / "1.png", 1, (80, 72))  # code 1 -> A_IDX[0]: right
    png(root / "a" / a[0] / "2.png", 1, (72, 80))  # right
    png(root / "a" / a[1] / "1.png", 2)  # code 2 -> A_IDX[1]: right
    png(root / "a" / a[1] / "2.png", 1)  # wrong
    png(root / "r" / r[0] / "1.png", 3)  # code 3 -> R_IDX[0]: right
    png(root / "r" / r[3] / "1.png", 4)  # code 4 -> R_IDX[3]: right
    png(root / "r" / r[3] / "2.png", 3)  # wrong
    png(root / "s" / w[OUTSIDE] / "1.png", 5)  # the unsliced argmax is OUTSIDE: right
    png(root / "s" / w[OUTSIDE] / "2.png", 5)
    png(root / "s" / w[3] / "1.png", 5)  # wrong
    return {"imagenet_c": root / "c", "imagenet_a": root / "a", "imagenet_r": root / "r",
            "imagenet_sketch": root / "s"}


STUB_TABLE = {0: [0], 1: [A_IDX[0]], 2: [A_IDX[1]], 3: [R_IDX[0]], 4: [R_IDX[3]], 5: [0]}


def test_robustness_numbers_match_a_hand_computation(tmp_path, monkeypatch, finetune_dir):
    roots = {k: str(v) for k, v in tiny_trees(tmp_path / "data").items()}
    stub(monkeypatch, ColourStub(STUB_TABLE))
    m = robustness.run(load_job_config(job(tmp_path, "robustness", finetune_dir, **roots)),
                       tmp_path / "out")
    assert m["imagenet_a_top1"] == pytest.approx(75.0)
    assert m["imagenet_r_top1"] == pytest.approx(200 / 3)
    assert m["imagenet_sketch_top1"] == pytest.approx(200 / 3)
    assert m["imagenet_c_errors"] == {c: [0.0, 1.0, 0.0, 1.0, 0.0] for c in M.CORRUPTIONS}
    assert m["mce"] == pytest.approx(100 * sum(0.4 / e for e in M.ALEXNET_ERRORS.values()) / 15)
    assert m["imagenet_c_unnormalized_ce"] == pytest.approx(40.0)
    assert m["imagenet_c_ignored_folders"] == ["speckle_noise"]
    assert m["n_images"] == {"imagenet_c": 75, "imagenet_a": 4, "imagenet_r": 3,
                             "imagenet_sketch": 3}
    assert m["skipped"] == {}
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == m


def test_robustness_plumbing_with_random_weights_and_mlflow(tmp_path, finetune_dir):
    from mlflow.tracking import MlflowClient

    roots = {k: str(v) for k, v in tiny_trees(tmp_path / "data").items()}
    roots.pop("imagenet_sketch")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("t")
    parent = client.create_run(exp, run_name="finetune").info.run_id
    ft = tmp_path / "ft"
    ft.mkdir()
    (ft / "model.pth").symlink_to(finetune_dir / "model.pth")
    (ft / "metrics.json").write_text(json.dumps({"mlflow_run_id": parent}))
    cfg = job(tmp_path, "robustness", ft, {"tracking_uri": uri, "experiment": "t"}, **roots)
    assert cli(["robustness", "--config", str(cfg), "--out", str(tmp_path / "out")]) == 0
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(robustness.RESULT_KEYS) | {"n_images", "skipped", "finetune_run_id"} <= set(m)
    assert m["skipped"] == {"imagenet_sketch": "eval.imagenet_sketch is not set"}
    assert m["imagenet_sketch_top1"] is None
    for key in ("mce", "imagenet_c_unnormalized_ce", "imagenet_a_top1", "imagenet_r_top1"):
        assert math.isfinite(m[key]), key
    assert 0 <= m["imagenet_a_top1"] <= 100 and m["mce"] >= 0
    assert m["mce"] == pytest.approx(M.mce(m["imagenet_c_errors"]))
    run = client.get_run(m["mlflow_run_id"])
    assert run.data.tags["mlflow.parentRunId"] == parent == m["finetune_run_id"]
    assert run.data.tags["finetune_run_id"] == parent
    assert run.data.metrics["mce"] == pytest.approx(m["mce"])
    assert "imagenet_c_error/fog/5" in run.data.metrics
    assert run.info.status == "FINISHED"


class NoForward(nn.Module):
    def forward(self, x):
        raise AssertionError("inference started before the inputs were checked")


def test_robustness_input_errors_name_the_culprit_before_inference(tmp_path, monkeypatch,
                                                                     finetune_dir):
    stub(monkeypatch, NoForward())
    roots = {k: str(v) for k, v in tiny_trees(tmp_path / "data").items()}
    stranger = next(w for w in imagenet_wnids() if w not in set(M.subset_wnids("imagenet_a")))
    png(Path(roots["imagenet_a"]) / stranger / "1.png")
    cfg = load_job_config(job(tmp_path, "robustness", finetune_dir, **roots))
    with pytest.raises(ValueError, match=rf"eval.imagenet_a.*{stranger}"):
        robustness.run(cfg, tmp_path / "out")
    png(tmp_path / "c" / "fog" / "1" / stranger / "1.png")
    cfg = load_job_config(job(tmp_path, "robustness", finetune_dir,
                              imagenet_c=str(tmp_path / "c")))
    with pytest.raises(ValueError, match=r"eval.imagenet_c.*gaussian_noise/1"):
        robustness.run(cfg, tmp_path / "out")
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_shape_bias_matches_a_hand_computation(tmp_path, monkeypatch, finetune_dir):
    code = {c: k for k, c in enumerate(SB.CATEGORIES)}  # red level 16 * k -> category k
    stims = [("airplane/airplane1-bear1.png", "airplane"),  # shape hit
             ("bear/bear1-airplane2.png", "airplane"),  # texture hit
             ("cat/cat1-dog1.png", "cat"),  # shape hit
             ("cat/cat2-knife1.png", "oven"),  # neither
             ("dog/dog1-dog2.png", "dog")]  # same cue: dropped
    for name, looks_like in stims:
        png(tmp_path / "cc" / name, code[looks_like])
    table = {k: SB.CATEGORY_INDICES[c] for c, k in code.items()}
    stub(monkeypatch, ColourStub(table, dominant=True))
    cfg = job(tmp_path, "shape_bias", finetune_dir, cue_conflict=str(tmp_path / "cc"))
    m = shape_bias.run(load_job_config(cfg), tmp_path / "out")
    assert m["shape_bias"] == pytest.approx(2 / 3)
    assert (m["n_images"], m["n_dropped_same_cue"]) == (5, 1)
    assert (m["n_shape_hits"], m["n_texture_hits"]) == (2, 1)
    per = m["per_category"]
    assert (per["airplane"], per["bear"], per["cat"], per["dog"]) == (1.0, 0.0, 1.0, None)
    with (tmp_path / "out" / "decisions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["file"], r["decision"]) for r in rows] == sorted(stims)


def test_shape_bias_stage_on_the_real_geirhos_stimuli(tmp_path, finetune_dir):
    root = STIMULI / "cue-conflict"
    if not root.is_dir():
        pytest.skip(f"Geirhos stimuli not found at {root}")
    files = sorted(root.glob("*/*.png"))
    same = sum(f.parent.name == re.sub(r"\d", "", f.stem.split("-")[-1]) for f in files)
    cfg = job(tmp_path, "shape_bias", finetune_dir, cue_conflict=str(root))
    assert cli(["shape_bias", "--config", str(cfg), "--out", str(tmp_path / "out")]) == 0
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["n_images"] == len(files) == 160
    assert m["n_dropped_same_cue"] == same > 0
    if m["shape_bias"] is None:  # only when no decision matched either cue
        assert m["n_shape_hits"] + m["n_texture_hits"] == 0 and m["shape_bias_undefined"]
    else:
        assert 0.0 <= m["shape_bias"] <= 1.0
        assert m["shape_bias"] == pytest.approx(
            m["n_shape_hits"] / (m["n_shape_hits"] + m["n_texture_hits"]))
    with (tmp_path / "out" / "decisions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 160 and {r["decision"] for r in rows} <= set(SB.CATEGORIES)
    print(f"random-weight tiny ViT on the real stimuli: shape bias {m['shape_bias']} "
          f"({m['n_shape_hits']} shape / {m['n_texture_hits']} texture hits)")


def test_shape_bias_under_a_batch_cap_scores_the_stimuli_read(tmp_path, monkeypatch,
                                                              finetune_dir):
    """eval.max_batches (a dress rehearsal's cap): 1 batch of 2 reads the first two stimuli
    in file order (airplane: shape hit, bear: texture hit), and scores only those."""
    code = {c: k for k, c in enumerate(SB.CATEGORIES)}
    for name, looks_like in [("airplane/airplane1-bear1.png", "airplane"),
                             ("bear/bear1-airplane2.png", "airplane"),
                             ("cat/cat1-dog1.png", "cat")]:
        png(tmp_path / "cc" / name, code[looks_like])
    stub(monkeypatch, ColourStub({k: SB.CATEGORY_INDICES[c] for c, k in code.items()},
                                 dominant=True))
    cfg = job(tmp_path, "shape_bias", finetune_dir, cue_conflict=str(tmp_path / "cc"))
    data = yaml.safe_load(cfg.read_text())
    data["eval"].update(batch_size=2, max_batches=1)
    cfg.write_text(yaml.safe_dump(data))
    m = shape_bias.run(load_job_config(cfg), tmp_path / "out")
    assert m["n_images"] == 2 and m["shape_bias"] == pytest.approx(1 / 2)
