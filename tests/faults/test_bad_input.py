"""Bad input: one line naming the culprit, no traceback, no partial declared output.

Stages run as ``python -m pixmim <stage>`` would (in a fork of the test process: jobs.run_forked,
or a subprocess); the workflow config through
``validate_config`` and ``snakemake -n``.
"""

import argparse
import copy
import errno
import io
import os
import re
import shutil
import sys
from pathlib import Path, PurePosixPath

import pytest
import torch
import torch.nn as nn
import yaml
from PIL import Image

from pixmim.config import ConfigError, JobConfig, TrainConfig, from_dict, load_job_config
from pixmim.data.transforms import (
    CROPS,
    build_eval_transform,
    build_probe_transform,
)
from pixmim.engine.loop import ResumeState, fit, make_loader
from pixmim.io import WriteError
from pixmim.stages import finetune, pretrain
from pixmim.stages.common import PROVENANCE, save_model
from pixmim.workflow import validate_config
from tests.conftest import ROOT
from tests.faults.jobs import (
    ARCH,
    error_line,
    finetune_job,
    linear_probe_job,
    lines,
    pretrain_job,
    run,
    run_forked,
    snakemake,
    stage_cmd,
    write,
)
from tests.faults.test_kill_resume import Toy

DECLARED = ("metrics.json", "checkpoint.pth", "model.pth")  # the rules' outputs


def assert_no_outputs(out):
    left = [name for name in DECLARED if (out / name).exists()]
    assert not left, left


def copy_data(src, tmp_path):
    dst = tmp_path / "data"
    shutil.copytree(src, dst)
    return dst


def job_config(job, stage):
    return from_dict(JobConfig, {**job, "stage": stage})


def first_image(root, split="train", cls=0):
    folder = sorted((root / split).iterdir())[cls]
    return sorted(folder.iterdir())[0]


# ---------------------------------------------------------------- the workflow config
@pytest.mark.parametrize("mutate,key,message", [
    (lambda c: c.update(pretrian={"epochs": 2}), "pretrian", "unknown key"),
    (lambda c: c["pretrain"].update(base_lrr=1e-3), "pretrain.base_lrr", "unknown key"),
    (lambda c: c["data"].update(bad_image="skip"), "data.bad_image", "unknown key"),
    (lambda c: c["pretrain"].update(batch_size="64"), "pretrain.batch_size",
     "'64' is not of type 'integer'"),
    (lambda c: c["finetune"].update(epochs=2.5), "finetune.epochs",
     "2.5 is not of type 'integer'"),
    (lambda c: c["pretrain"].update(base_lr=0), "pretrain.base_lr",
     "0 is less than or equal to the minimum of 0"),
    (lambda c: c["linear_probe"].update(ckpt_every_steps=-1), "linear_probe.ckpt_every_steps",
     "-1 is less than the minimum of 0"),
    (lambda c: c["data"].update(bad_images="ignore"), "data.bad_images",
     "'ignore' is not one of ['fail', 'skip']"),
])
def test_workflow_config_error_names_the_key(default_config, mutate, key, message):
    config = copy.deepcopy(default_config)
    mutate(config)
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    assert str(err.value).startswith(f"config key {key}: {message}"), str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("section,bad,message", [
    ("pretrain", {"batch_size": 0}, "pretrain.batch_size: 0 is less than the minimum of 1"),
    ("linear_probe", {"epochz": 2}, "linear_probe.epochz: unknown key"),
])
def test_snakemake_stops_on_a_bad_key_with_one_line(tmp_path, section, bad, message):
    overlay = write(tmp_path / "bad.yaml", {"results": str(tmp_path / "results"), section: bad})
    res = snakemake("-n", "--configfile", str(overlay))
    assert res.returncode != 0
    output = res.stdout + res.stderr
    assert "Traceback" not in output and 'File "' not in output, output[-3000:]
    said = [s for s in lines(output) if message in s]
    assert len(said) == 1 and said[0].startswith(f"ConfigError: config key {message}"), \
        output[-3000:]
    assert not (tmp_path / "results").exists()


def test_job_config_key_typo_stops_the_stage_with_one_line(tmp_path, tiny_data):
    job = pretrain_job(tiny_data)
    job["train"]["ckpt_every_minute"] = 5  # mistyped ckpt_every_minutes
    out = tmp_path / "out"
    res = run_forked(stage_cmd("pretrain", write(tmp_path / "c.yaml", job), out))
    line = error_line(res, "pretrain")
    assert "train.ckpt_every_minute: unknown key" in line and str(tmp_path / "c.yaml") in line
    assert not out.exists()


@pytest.mark.parametrize("train,message", [
    ({"epochs": "3"}, "train.epochs: expected int, got '3'"),
    ({"base_lr": "fast"}, "train.base_lr: expected float, got 'fast'"),
    ({"ckpt_every_steps": True}, "train.ckpt_every_steps: expected int, got True"),
])
def test_job_config_wrong_type_names_the_key(tmp_path, tiny_data, train, message):
    job = pretrain_job(tiny_data, **train)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_job_config(write(tmp_path / "c.yaml", job))


# ---------------------------------------------------------------- the data
def test_missing_dataset_root(tmp_path):
    out = tmp_path / "out"
    res = run_forked(stage_cmd("pretrain", write(tmp_path / "c.yaml",
                                          pretrain_job(tmp_path / "nowhere")), out))
    line = error_line(res, "pretrain")
    assert line == (f"pixmim pretrain: error: data.root: dataset split folder not found: "
                    f"{tmp_path / 'nowhere' / 'train'}")
    assert_no_outputs(out)


def test_empty_class_folder(tmp_path, tiny_data):
    data = copy_data(tiny_data, tmp_path)
    empty = sorted((data / "train").iterdir())[3]
    for f in empty.iterdir():
        f.unlink()
    out = tmp_path / "out"
    res = run_forked(stage_cmd("pretrain", write(tmp_path / "c.yaml", pretrain_job(data)), out))
    line = error_line(res, "pretrain")
    assert f"data.root: {data / 'train'}: Found no valid file for the classes {empty.name}" \
        in line
    assert_no_outputs(out)


def corrupt(path):
    """Garbage bytes under an image name."""
    path.write_bytes(b"\x89PNG but not really" + bytes(range(256)) * 4)
    return path


def truncated_png(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def truncated_jpeg(path):
    """A real JPEG cut in half, beside the PNGs (ImageFolder reads both)."""
    buf = io.BytesIO()
    Image.open(path).convert("RGB").save(buf, "JPEG", quality=95)
    path.unlink()
    jpeg = path.with_suffix(".JPEG")
    jpeg.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return jpeg


@pytest.mark.parametrize("damage,workers", [(corrupt, 0), (truncated_png, 0),
                                            (truncated_jpeg, 2)])
def test_unreadable_image_fails_naming_the_file_and_the_policy_key(tmp_path, tiny_data,
                                                                     damage, workers):
    data = copy_data(tiny_data, tmp_path)
    bad = damage(first_image(data, cls=5))
    out = tmp_path / "out"
    job = pretrain_job(data, epochs=1, num_workers=workers, data_keys={"bad_images": "fail"})
    res = run_forked(stage_cmd("pretrain", write(tmp_path / "c.yaml", job), out))
    line = error_line(res, "pretrain")
    assert line.startswith(f"pixmim pretrain: error: data.root: cannot read image {bad} (")
    assert line.endswith("set data.bad_images: skip to skip and count such files")
    assert_no_outputs(out)


@pytest.mark.parametrize("workers", [0, 2])
def test_unreadable_images_are_skipped_and_counted(tmp_path, tiny_data, workers):
    data = copy_data(tiny_data, tmp_path)
    bad = [corrupt(first_image(data, cls=2)), truncated_png(first_image(data, cls=9))]
    out = tmp_path / "out"
    job = pretrain_job(data, epochs=1, num_workers=workers, data_keys={"bad_images": "skip"})
    res = run_forked(stage_cmd("pretrain", write(tmp_path / "c.yaml", job), out))
    assert res.returncode == 0, res.stderr[-4000:]
    for path in bad:
        assert f"[data] skipping unreadable image {path} (" in res.stderr
    metrics = yaml.safe_load((out / "metrics.json").read_text())
    assert metrics["bad_images_skipped"] == 2
    assert (out / "checkpoint.pth").is_file()


SMALL = [(8, 8), (3, 50), (50, 3), (1, 1)]  # (width, height), all below the 64 px crop


@pytest.mark.parametrize("size", SMALL)
def test_images_smaller_than_the_crop_come_out_at_the_input_size(size):
    img = Image.new("RGB", size, (200, 30, 60))
    mask = Image.new("L", size, 255)
    cfg = job_config(pretrain_job("unused"), stage="finetune")
    transforms = {**{f"crop {name}": make(64) for name, make in CROPS.items()},
                  "probe": build_probe_transform(64), "eval": build_eval_transform(64)}
    for name, tf in transforms.items():
        x = tf(img, mask) if getattr(tf, "needs_mask", False) else tf(img)
        assert tuple(x.shape) == (3, 64, 64), name
    torch.manual_seed(0)
    assert tuple(finetune.train_transform(cfg)(img).shape) == (3, 64, 64)


def test_a_stage_with_images_smaller_than_the_crop_finishes(tmp_path, tiny_data):
    data = copy_data(tiny_data, tmp_path)
    for cls, size in zip((1, 4, 7, 11), SMALL, strict=True):
        path = first_image(data, cls=cls)
        Image.new("RGB", size, (cls * 20, 90, 160)).save(path)
    out = tmp_path / "out"
    job = pretrain_job(data, epochs=1, variant={"crop": "rrc"})
    res = run_forked(stage_cmd("pretrain", write(tmp_path / "c.yaml", job), out))
    assert res.returncode == 0, res.stderr[-4000:]
    assert (out / "metrics.json").is_file() and (out / "checkpoint.pth").is_file()


# ---------------------------------------------------------------- checkpoints
def _pretrain_model(method, arch):
    cfg = job_config({**pretrain_job("unused"), "method": method, "arch": arch},
                               "pretrain")
    return pretrain.build(cfg)


def ckpt_of_another_method(path):
    save_model(path, _pretrain_model("convmae", "convvit_cpu_64"),
               {"method": "convmae", "arch": "convvit_cpu_64"})
    return "checkpoint is convmae/convvit_cpu_64, config asks for mae/vit_cpu_patch8_64"


def ckpt_of_another_size(path):
    # the meta a ViT-S run writes (the weights are not read: the meta check comes first)
    save_model(path, _pretrain_model("mae", ARCH),
               {"method": "mae", "arch": "vit_small_patch16_224"})
    return "checkpoint is mae/vit_small_patch16_224, config asks for mae/vit_cpu_patch8_64"


def ckpt_without_meta(path):
    # a bare state dict, as other codebases save them
    torch.save({"model": _pretrain_model("mae", ARCH).state_dict()}, path)
    return ("not a pixmim pretraining checkpoint (no model + meta entries); config asks for "
            "mae/vit_cpu_patch8_64")


def ckpt_with_pickled_objects(path):
    # an object weights_only refuses (an argparse Namespace, which the official training
    # scripts save beside the weights, is the one allowed: see the test below)
    torch.save({"model": _pretrain_model("mae", ARCH).state_dict(),
                "output_dir": PurePosixPath("/runs/mae")}, path)
    return "not a checkpoint that loads with weights_only=True (UnpicklingError: "


@pytest.mark.parametrize("stage,make_ckpt", [
    ("linear_probe", ckpt_of_another_method),
    ("finetune", ckpt_of_another_size),
    ("linear_probe", ckpt_without_meta),
    ("finetune", ckpt_with_pickled_objects),
])
def test_checkpoint_of_another_method_or_size(tmp_path, tiny_data, stage, make_ckpt):
    pre = tmp_path / "pretrain"
    pre.mkdir()
    message = make_ckpt(pre / "checkpoint.pth")
    job = (linear_probe_job if stage == "linear_probe" else finetune_job)(tiny_data, pre)
    out = tmp_path / "out"
    res = run_forked(stage_cmd(stage, write(tmp_path / "c.yaml", job), out))
    line = error_line(res, stage)
    assert line.startswith(f"pixmim {stage}: error: {pre / 'checkpoint.pth'}: {message}"), line
    assert_no_outputs(out)


def test_a_checkpoint_with_its_training_args_loads(tmp_path):
    """facebookresearch/mae's, ConvMAE's and long_seq_mae's training scripts save
    ``{"model", "optimizer", "epoch", "scaler", "args"}`` (util/misc.py save_model), ``args``
    an argparse Namespace: such a file loads, and imports as the mae layout."""
    from pixmim.families.vit.formats import to_ours
    from pixmim.stages.common import load_model_file

    model = _pretrain_model("mae", ARCH)
    path = tmp_path / "checkpoint-799.pth"
    torch.save({"model": model.state_dict(), "epoch": 799,
                "args": argparse.Namespace(model="mae_vit_base_patch16", mask_ratio=0.75,
                                           norm_pix_loss=True, blr=1.5e-4)}, path)
    raw = load_model_file(path)
    assert raw["args"].mask_ratio == 0.75
    state, _ = to_ours(raw, "mae", "pretrained", "mae", ARCH)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


# ---------------------------------------------------------------- non-finite loss
def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_state(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    cfg = TrainConfig(epochs=2, batch_size=8, ckpt_every_steps=1, seed=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = {"n": 0}

    def loss_fn(batch):
        calls["n"] += 1
        loss = nn.functional.cross_entropy(model(batch[0]), batch[1])
        return loss * float("nan") if calls["n"] == 4 else loss

    state_path = tmp_path / "_state" / "last.pth"
    with pytest.raises(FloatingPointError, match=re.escape(
            f"non-finite loss at epoch 1, between steps 3 and 4; the last good state is kept "
            f"in {state_path}")):
        fit(model, loss_fn, opt, make_loader(Toy(), cfg, train=True), cfg, tmp_path)
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    # the 4th batch's loss is read at the save after its step (the step makes no host
    # sync): that save is refused, the file keeps the state after step 3
    assert (state["epoch"], state["step"], state["batches_done"]) == (0, 3, 3)
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_diverging_run_stops_with_one_line_naming_the_step(tmp_path, tiny_data):
    out = tmp_path / "out"
    job = pretrain_job(tiny_data, epochs=2, warmup_epochs=0, base_lr=1e30)
    res = run_forked(stage_cmd("pretrain", write(tmp_path / "c.yaml", job), out))
    line = error_line(res, "pretrain")
    state_path = out / "_state" / "last.pth"
    m = re.fullmatch(rf"pixmim pretrain: error: non-finite loss at epoch 1, between steps "
                     rf"(\d+) and (\d+); the last good state is kept in "
                     rf"{re.escape(str(state_path))}", line)
    assert m, line
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    assert state["step"] == int(m[1]) < int(m[2])
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert_no_outputs(out)


# ---------------------------------------------------------------- names and paths
@pytest.mark.parametrize("section,name", [
    ("runs", "a;rm -rf x"), ("runs", "mae_$(reboot)"), ("variants", "pix mim"),
    ("tables", "table2`id`"),
])
def test_names_with_shell_metacharacters_are_config_errors(default_config, section, name):
    config = copy.deepcopy(default_config)
    first = next(iter(config[section].values()))
    config[section][name] = copy.deepcopy(first)
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    assert str(err.value).startswith(f"config key {section}: {name!r} does not match "), \
        str(err.value)


def test_a_results_path_full_of_shell_metacharacters_stays_a_path(tmp_path):
    results = tmp_path / "res dir 'q\" $(touch PWNED); echo `touch PWNED` & x"
    overlay = write(tmp_path / "odd.yaml", {
        "results": str(results),
        "data": {"synth": {"seed": 1, "train_per_class": 1, "val_per_class": 1,
                           "short_side": 32}}})
    target = results / "data" / "synth"
    res = snakemake(str(target), "--configfile", str(overlay))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert len(list((target / "train").glob("*/*.png"))) == 16
    assert (results / "logs" / "generate_data.log").is_file()
    # a substitution would run in the job's working directory (the repo root)
    pwned = [*tmp_path.rglob("PWNED*"), *ROOT.glob("PWNED*"), *Path.cwd().glob("PWNED*")]
    assert not pwned, pwned


# ---------------------------------------------------------------- a full disk
class FullDisk(io.RawIOBase):
    """A file that takes ``room`` bytes, then fails as a full disk does (ENOSPC)."""

    def __init__(self, path, room):
        self.f, self.room = open(path, "wb"), room  # noqa: SIM115 - closed in close()

    def writable(self):
        return True

    def write(self, b):
        if len(b) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(b)
        return self.f.write(b)

    def close(self):
        self.f.close()
        super().close()


@pytest.mark.parametrize("failure", ["torch-writer", "oserror"])
def test_disk_full_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch,
                                                                  failure):
    resume = ResumeState(tmp_path)
    good = {"model": {"w": torch.arange(4.0)}, "step": 1}
    resume.save(good)
    real_save = torch.save

    def full_disk_save(obj, f, *args, **kwargs):
        if failure == "oserror":  # some bytes land, then the write fails
            with open(f, "wb") as fh:
                fh.write(b"PK\x03\x04partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
        with FullDisk(f, room=700) as fh:  # what torch.save reports for a full disk
            return real_save(obj, fh, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk_save)
    with pytest.raises(OSError) as err:
        resume.save({"model": {"w": torch.randn(10_000)}, "step": 2})
    monkeypatch.setattr(torch, "save", real_save)
    assert isinstance(err.value, WriteError)
    assert str(err.value).startswith(f"cannot write {resume.path} (")
    assert "\n" not in str(err.value)
    back = torch.load(resume.path, map_location="cpu", weights_only=True)
    assert back["step"] == 1 and torch.equal(back["model"]["w"], good["model"]["w"])
    assert sorted(p.name for p in resume.path.parent.iterdir()) == ["last.pth"]  # no temp file


DISK_FULLS_AT_THE_3RD_SAVE = r"""
import errno, io, os, sys, torch

class FullDisk(io.RawIOBase):  # 4 KiB land, then ENOSPC
    def __init__(self, path):
        self.f, self.room = open(path, "wb"), 4096
    def writable(self):
        return True
    def write(self, b):
        if len(b) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(b)
        return self.f.write(b)

real_save, calls = torch.save, []
def save(obj, f, *args, **kwargs):
    calls.append(f)
    return real_save(obj, FullDisk(f) if len(calls) == 3 else f, *args, **kwargs)

torch.save = save
from pixmim.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def test_disk_full_during_a_stage_is_one_line_and_the_previous_state_survives(tmp_path,
                                                                              tiny_data):
    out = tmp_path / "out"
    cfg = write(tmp_path / "c.yaml", pretrain_job(tiny_data, epochs=2))
    res = run([sys.executable, "-c", DISK_FULLS_AT_THE_3RD_SAVE, "pretrain", "--config",
               str(cfg), "--out", str(out)])
    line = error_line(res, "pretrain")
    state_path = out / "_state" / "last.pth"
    # torch.save reports the full disk as "RuntimeError: [enforce fail at inline_container.cc
    # ...] unexpected pos ...": the line names the file and the free space instead
    assert line.startswith(f"pixmim pretrain: error: cannot write {state_path} (RuntimeError: ")
    assert re.search(r"; \d+ MiB free there\); any previous last.pth is unchanged$", line), line
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    assert state["step"] == 2  # saved after steps 1 and 2; the 3rd save hit the full disk
    # no temp file: the state and the provenance its run started with (stages.common)
    assert sorted(p.name for p in state_path.parent.iterdir()) == ["last.pth", PROVENANCE]
    assert_no_outputs(out)
