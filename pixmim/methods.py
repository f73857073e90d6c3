"""The built-in pretraining methods: ``METHODS``, plain data the DAG imports without torch.

Each entry names its class (``module:Class``, imported only by the jobs that build it), its
encoder family (:mod:`pixmim.families`), its arch table (arch name -> the class's keyword
arguments) and the parameters only pretraining uses. A user's method is the same
declaration in a plugin module (config key ``plugins``; see :mod:`pixmim.declare`). PixMIM
is not a method: it is the target/crop variant of any method (``target="lowpass"``).
"""

from __future__ import annotations

from pixmim.declare import Method

# ------------------------------------------------ MAE (He et al., CVPR 2022)
# Decoder 8 x 512 x 16 heads for every ViT size: MAE Sec. 4 / Table 1 (PixMIM keeps it).
_DEC = dict(decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16)
# CPU size for the embedded dataset and tests (not a paper model). Width 64, not 128: at the
# same cost (pretraining 40 epochs at 64 vs 20 at 128, ~150 s on one core) both probe ~31%
# top-1 on the default, and fine-tuning costs 2.2x less (34 vs 76 s for 8 epochs), which
# lets the default run three seeds in 20 minutes.
VIT_CPU = dict(img_size=64, patch_size=8, embed_dim=64, depth=4, num_heads=4,
               decoder_embed_dim=64, decoder_depth=2, decoder_num_heads=2)
VIT_ARCHS = {
    "vit_cpu_patch8_64": VIT_CPU,
    # ViT-S/B/L (Dosovitskiy et al. 2021): PixMIM Table 2 (B) and Table 16 (S, L).
    # Each arch declares its pretraining input size (pixmim.workflow.jobs.pretrain_size).
    "vit_small_patch16_224": dict(img_size=224, embed_dim=384, depth=12, num_heads=6, **_DEC),
    "vit_base_patch16_224": dict(img_size=224, embed_dim=768, depth=12, num_heads=12, **_DEC),
    "vit_large_patch16_224": dict(img_size=224, embed_dim=1024, depth=24, num_heads=16, **_DEC),
}
# MAE's pretraining-only parameters (no downstream model takes them): the decoder, the mask
# token.
MAE_PRETRAIN_ONLY = ("decoder_", "mask_token")

# ------------------------------------------------ MFF (Liu et al., ICCV 2023)
# MFF fuses blocks [0, 2, 4, 6, 8, 11] of ViT-B (Liu et al. 2023; mmpretrain mff.py).
MFF_ARCHS = {
    "vit_cpu_patch8_64": dict(VIT_CPU, fusion_layers=(0, 1, 2, 3)),
    "vit_base_patch16_224": dict(VIT_ARCHS["vit_base_patch16_224"],
                                 fusion_layers=(0, 2, 4, 6, 8, 11)),
}

# ------------------------------------------------ LSMAE (Hu et al., 2022)
# 448 px, 32-px mask units (2x2 patches), decoder 384 x 12 heads x 8 (long_seq_mae).
LSMAE_ARCHS = {
    "vit_cpu_patch8_64": dict(VIT_CPU, mask_unit=2),
    "vit_base_patch16_448": dict(img_size=448, embed_dim=768, depth=12, num_heads=12,
                                 decoder_embed_dim=384, decoder_depth=8, decoder_num_heads=12,
                                 mask_unit=2),
}

# ------------------------------------------------ ConvMAE (Gao et al., NeurIPS 2022)
CONVMAE_ARCHS = {
    # CPU size for the embedded dataset and tests (not a paper model): 1/16 grid of 4x4.
    "convvit_cpu_64": dict(img_size=64, embed_dims=(32, 48, 96), depths=(1, 1, 2), num_heads=4,
                           decoder_embed_dim=64, decoder_depth=2, decoder_num_heads=2),
    # ConvMAE-B: Alpha-VL/ConvMAE convmae_convvit_base_patch16_dec512d8b (88M encoder).
    "convvit_base_224": dict(img_size=224, patch_sizes=(4, 2, 2), embed_dims=(256, 384, 768),
                             depths=(2, 2, 11), num_heads=12, decoder_embed_dim=512,
                             decoder_depth=8, decoder_num_heads=16),
}

METHODS = [
    Method(name="mae", model="pixmim.models.mae:MAE", family="vit", archs=VIT_ARCHS,
           pretrain_only=MAE_PRETRAIN_ONLY),
    # MFF: MAE's pretraining-only parameters and the fusion projections and weights.
    Method(name="mff", model="pixmim.models.mff:MFF", family="vit", archs=MFF_ARCHS,
           pretrain_only=(*MAE_PRETRAIN_ONLY, "fusion_")),
    Method(name="lsmae", model="pixmim.models.lsmae:LSMAE", family="vit", archs=LSMAE_ARCHS,
           pretrain_only=MAE_PRETRAIN_ONLY),
    # ConvMAE: a hybrid conv + ViT encoder (family convvit). Pretraining-only: the decoder and
    # the mask token (the fusion convs belong to the encoder; its family drops them where its
    # downstream models have none).
    Method(name="convmae", model="pixmim.models.convmae:ConvMAE", family="convvit",
           archs=CONVMAE_ARCHS, pretrain_only=MAE_PRETRAIN_ONLY),
]
