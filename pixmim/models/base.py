"""What every masked-image-modeling method shares: targets, loss, masking, patches.

``MIMBase`` holds the PixMIM target knob (``pixel`` | ``lowpass`` | ``highpass`` |
``adaptive``), the per-patch normalised MSE on masked patches, the argsort random masking
(optionally driven by caller-supplied noise, so that masks are a function of the sample and
not of the process or the batch split) and (un)patchify. Methods subclass it and implement
``forward_encoder``/``forward_decoder``. Notation: N batch, L patches, D width, p patch.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from pixmim.models.targets import highpass, lowpass_normalised, soft_lowpass

# ImageNet statistics used to normalise inputs (torchvision / MAE convention).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TARGETS = ("pixel", "lowpass", "highpass", "adaptive")


class MIMBase(nn.Module):
    """Targets, loss and masking shared by MAE, MFF, ConvMAE and LSMAE.

    Args:
        patch_size: side of the patches the loss is computed on (px).
        mask_ratio: fraction of mask units removed (0.75: MAE Sec. 4).
        norm_pix_loss: normalise each target patch by its mean and std (MAE Sec. 3).
        target: ``pixel``; ``lowpass`` / ``highpass`` with ``radius`` in frequency bins and
            ``lowpass_mode`` (``official`` | ``centered``); ``adaptive``: a learnable radius
            kept in ``adaptive_range`` (PixMIM Table 21), initialised at ``radius``.
    """

    probe_pool = "cls"  # linear probe features: cls token (MAE) or "avg" (ConvMAE)

    def __init__(self, *, patch_size: int, in_chans: int = 3, mask_ratio: float = 0.75,
                 norm_pix_loss: bool = True, target: str = "pixel", radius: float = 40.0,
                 lowpass_mode: str = "official",
                 adaptive_range: tuple[float, float] = (20.0, 60.0)) -> None:
        super().__init__()
        if target not in TARGETS:
            raise ValueError(f"variant.target must be one of {TARGETS}, got {target!r}")
        self.patch_size, self.in_chans = patch_size, in_chans
        self.mask_ratio, self.norm_pix_loss = mask_ratio, norm_pix_loss
        self.target, self.radius, self.lowpass_mode = target, radius, lowpass_mode
        self.adaptive_range = tuple(adaptive_range)
        if target == "adaptive":
            lo, hi = self.adaptive_range
            if not lo < radius < hi:
                raise ValueError(f"variant.radius {radius} must lie inside adaptive_range {lo, hi}")
            frac = (radius - lo) / (hi - lo)
            self.radius_logit = nn.Parameter(torch.tensor(math.log(frac / (1 - frac))))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)

    # ------------------------------------------------------------ patch utils
    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """imgs: [N, C, H, W] -> [N, L, p*p*C] (row-major patches, pixel order (p, p, C))."""
        n, c, h, w = imgs.shape
        p = self.patch_size
        x = imgs.reshape(n, c, h // p, p, w // p, p)
        return torch.einsum("nchpwq->nhwpqc", x).reshape(n, (h // p) * (w // p), p * p * c)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, L, p*p*C] -> [N, C, H, W] (square images)."""
        p, c = self.patch_size, self.in_chans
        g = int(x.shape[1] ** 0.5)
        x = x.reshape(x.shape[0], g, g, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], c, g * p, g * p)

    # ---------------------------------------------------------------- masking
    @property
    def num_mask_units(self) -> int:
        """How many units one mask is drawn over (patches, or LSMAE's 2x2 patch blocks)."""
        return self.num_patches

    @staticmethod
    def random_masking(x: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None):
        """Per-sample random masking by sorting noise.

        Args:
            x: [N, L, D] tokens.
            noise: optional [N, L] uniform noise (drawn here when absent).

        Returns:
            x_visible: [N, L_keep, D] with L_keep = int(L * (1 - mask_ratio));
            mask: [N, L], 1 = removed, in the original order;
            ids_restore: [N, L], the inverse permutation that un-shuffles.
        """
        n, length, d = x.shape
        len_keep = int(length * (1 - mask_ratio))
        if noise is None:
            noise = torch.rand(n, length, device=x.device)
        # argsort trick: sorting i.i.d. noise gives a uniform random permutation per
        # sample; its first len_keep entries are kept, and argsort of the permutation
        # is its inverse, used to put decoder tokens back in place.
        ids_shuffle = torch.argsort(noise.to(x.device), dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :len_keep]
        x_visible = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, d))
        mask = torch.ones(n, length, device=x.device)
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        return x_visible, mask, ids_restore

    # ----------------------------------------------------------------- target
    @property
    def current_radius(self) -> float:
        if self.target != "adaptive":
            return self.radius
        lo, hi = self.adaptive_range
        return float(lo + (hi - lo) * torch.sigmoid(self.radius_logit.detach()))

    def forward_target(self, imgs: torch.Tensor) -> torch.Tensor:
        """imgs: [N, 3, H, W] normalised -> target [N, L, p*p*3] (before norm_pix).

        Filtered targets follow mmselfsup's PixMIM: un-normalise to [0, 1], filter in
        float32, re-normalise; no gradient reaches the images.
        """
        imgs = imgs.detach().float()
        if self.target == "pixel":
            return self.patchify(imgs)
        if self.target == "lowpass":  # un-normalise / filter / re-normalise folded in
            with torch.no_grad():
                return self.patchify(lowpass_normalised(
                    imgs, self.radius, self.lowpass_mode, IMAGENET_MEAN, IMAGENET_STD))
        raw = imgs * self.std + self.mean
        if self.target == "adaptive":
            lo, hi = self.adaptive_range
            radius = lo + (hi - lo) * torch.sigmoid(self.radius_logit)
            filtered = soft_lowpass(raw, radius, self.lowpass_mode)
        else:
            with torch.no_grad():
                filtered = highpass(raw, self.radius, self.lowpass_mode)
        return self.patchify((filtered - self.mean) / self.std)

    def forward_loss(self, target: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor):
        """Per-patch normalised MSE averaged over the masked patches only.

        Args:
            target, pred: [N, L, p*p*3]; mask: [N, L], 1 = removed.
        """
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        loss = ((pred.float() - target) ** 2).mean(dim=-1)
        return (loss * mask).sum() / mask.sum()

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Tokens, position embeddings and the adaptive radius take no weight decay."""
        return {"cls_token", "mask_token", "pos_embed", "decoder_pos_embed", "radius_logit"}
