"""A toy pixel-MIM method, declared the way a user declares one: this torch-free module (its
declaration), the class it names (``model.py``), the config key ``plugins``, and its
catalogue rows.
"""

from pixmim.declare import Method
from pixmim.methods import MAE_PRETRAIN_ONLY, VIT_CPU

METHODS = [Method(name="toymae", model="tests.plugins.toy_mae.model:ToyMAE", family="vit",
                  archs={"vit_cpu_patch8_64": VIT_CPU}, pretrain_only=MAE_PRETRAIN_ONLY)]
