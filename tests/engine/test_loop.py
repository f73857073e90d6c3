"""The shared training loop: schedule shape and resume equivalence."""

import pytest
import torch
import torch.nn as nn

from pixmim.config import TrainConfig
from pixmim.engine.loop import ResumeState, build_scheduler, fit, make_loader, scaled_lr


def test_lr_scaling_rule():
    # lr = base_lr * batch / 256 (MAE: 1.5e-4 x 4096 / 256 = 2.4e-3)
    assert scaled_lr(TrainConfig(base_lr=1.5e-4, batch_size=4096)) == pytest.approx(2.4e-3)


def test_per_iteration_warmup_then_cosine():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    cfg = TrainConfig(epochs=10, warmup_epochs=2, min_lr=0.0)
    sched = build_scheduler(opt, cfg, steps_per_epoch=5)
    lrs = []
    for step in range(50):
        sched.step_update(step)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(0.5)  # linear warm-up over 10 steps
    assert lrs[10] == pytest.approx(1.0)  # peak right after warm-up
    assert lrs[30] == pytest.approx(0.5, abs=1e-6)  # half-way through the cosine
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))  # monotone decay


class Interrupt(Exception):
    pass


class Toy(torch.utils.data.Dataset):
    """48 samples; keys (index, seed) add seeded augmentation noise, as ImageDataset does."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(48, 6, generator=g), torch.randint(0, 3, (48,), generator=g)

    def __len__(self):
        return 48

    def __getitem__(self, key):
        i, seed = key
        noise = torch.randn(6, generator=torch.Generator().manual_seed(seed)) * 0.1
        return self.x[i] + noise, self.y[i], seed


def _train(tmp, epochs, interrupt_at_step=None, accum=1):
    torch.manual_seed(123)
    model = nn.Sequential(nn.Linear(6, 16), nn.Dropout(0.2), nn.Linear(16, 3))
    cfg = TrainConfig(epochs=epochs, warmup_epochs=1, batch_size=8, accum_steps=accum,
                      base_lr=0.5, seed=3, ckpt_every_steps=1)
    opt = torch.optim.AdamW(model.parameters(), lr=scaled_lr(cfg))
    calls = {"n": 0}

    def loss_fn(batch):
        calls["n"] += 1
        if calls["n"] == interrupt_at_step:
            raise Interrupt
        return nn.functional.cross_entropy(model(batch[0]), batch[1])

    history = fit(model, loss_fn, opt, make_loader(Toy(), cfg, train=True), cfg, tmp,
                  evaluate=lambda: {}, desc="test")
    return model, history


@pytest.mark.parametrize("accum", [1, 2])
@pytest.mark.parametrize("interrupt_at", [4, 9, 14])  # mid-epoch and at an epoch boundary
def test_resume_gives_identical_weights(tmp_path, interrupt_at, accum):
    ref, ref_hist = _train(tmp_path / "a", epochs=3, accum=accum)
    with pytest.raises(Interrupt):
        _train(tmp_path / "b", epochs=3, interrupt_at_step=interrupt_at, accum=accum)
    state = ResumeState(tmp_path / "b").load()
    assert state["step"] == (interrupt_at - 1) // accum
    resumed, hist = _train(tmp_path / "b", epochs=3, accum=accum)
    for (name, a), b in zip(ref.state_dict().items(), resumed.state_dict().values(),
                             strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"{name} differs after resume")
    assert [h["train_loss"] for h in hist] == [h["train_loss"] for h in ref_hist]


def test_non_finite_loss_stops_with_the_step(tmp_path):
    model = nn.Linear(2, 1)
    cfg = TrainConfig(epochs=1, batch_size=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(FloatingPointError,
                       match="non-finite loss at epoch 1, between steps 0 and 10;"):
        fit(model, lambda b: model(b[0][:, :2]).sum() * float("nan"), opt,
            make_loader(Toy(), cfg, train=True), cfg, tmp_path)


def test_a_training_step_reads_nothing_back_from_the_device(tmp_path, monkeypatch):
    """The loss is summed on the device and read (one host sync) only every
    ``train.log_every`` optimizer steps and at the epoch's end: on a GPU a step queues its
    kernels without waiting. Counted here as the loop's own Tensor reads (item, tolist,
    float, bool) over 12 steps with log_every=5: 2 + 1, where reading every step made 12."""
    import sys

    reads = []
    for name in ("item", "tolist", "__float__", "__bool__"):
        real = getattr(torch.Tensor, name)

        def counted(self, *a, real=real, name=name):
            if sys._getframe(1).f_code.co_filename.endswith("pixmim/engine/loop.py"):
                reads.append((name, sys._getframe(1).f_lineno))
            return real(self, *a)

        monkeypatch.setattr(torch.Tensor, name, counted)
    model = nn.Sequential(nn.Linear(6, 16), nn.Linear(16, 3))
    cfg = TrainConfig(epochs=1, batch_size=4, log_every=5, ckpt_every_steps=0,
                      ckpt_every_minutes=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    history = fit(model, lambda b: nn.functional.cross_entropy(model(b[0]), b[1]), opt,
                  make_loader(Toy(), cfg, train=True), cfg, tmp_path)
    assert len(reads) == 12 // 5 + 1, reads
    assert history[0]["train_loss"] > 0


@pytest.mark.parametrize("max_steps", [1, 2, 7])
def test_max_steps_stops_the_loop_with_the_schedule_kept(tmp_path, max_steps):
    """A dress rehearsal's cap: the loop makes exactly max_steps optimizer steps (accum 2:
    two batches each), validates at the capped end (eval_every 100), and the lr follows
    the uncapped run's schedule (800 epochs, 40 warm-up) up to that step."""
    model = nn.Linear(6, 3)
    cfg = TrainConfig(epochs=800, warmup_epochs=40, batch_size=8, accum_steps=2,
                      base_lr=0.5, eval_every=100, max_steps=max_steps)
    opt = torch.optim.AdamW(model.parameters(), lr=scaled_lr(cfg))
    seen, evals = [], []

    def loss_fn(batch):
        seen.append(len(batch[0]))
        return nn.functional.cross_entropy(model(batch[0]), batch[1])

    loader = make_loader(Toy(), cfg, train=True)
    history = fit(model, loss_fn, opt, loader, cfg, tmp_path,
                  evaluate=lambda: evals.append(1) or {"top1": 0.0})
    assert len(seen) == 2 * max_steps
    assert len(evals) == 1 and "top1" in history[-1]
    steps_per_epoch = len(loader.sampler) // loader.batch_size // cfg.accum_steps
    ref = build_scheduler(torch.optim.AdamW(nn.Linear(1, 1).parameters(), lr=scaled_lr(cfg)),
                          cfg, steps_per_epoch)
    ref.step_update(max_steps - 1)
    assert opt.param_groups[0]["lr"] == pytest.approx(ref.optimizer.param_groups[0]["lr"])


def test_capped_reads_at_most_the_limit():
    from pixmim.engine.loop import capped

    assert list(capped(iter(range(10)), 3)) == [0, 1, 2]
    assert list(capped(iter(range(4)), 0)) == [0, 1, 2, 3]
