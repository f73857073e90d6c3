"""A toy SimMIM-style method on the toy hierarchical family (tests/plugins/toy_family),
declared the way a user declares one: this torch-free module (its declaration), the class it
names (``model.py``) and its family package, named in the config key ``plugins``, plus
catalogue rows.
"""

from pixmim.declare import Method

METHODS = [Method(
    name="toyhier", model="tests.plugins.toy_simmim.model:ToySimMIM",
    family="tests.plugins.toy_family",
    archs={"hier_cpu_64": dict(img_size=64, embed_dims=(32, 64), depths=(1, 2), num_heads=4)},
    pretrain_only=("mask_token", "decoder_"))]
