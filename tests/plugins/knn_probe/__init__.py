"""A toy evaluation stage, declared the way a user declares one: this torch-free module (its
declaration), the stage module it names (``stage.py``: ``run`` and ``main``), its config
section (``knn_probe: {k: 5}``) and a table column (``knn``), nothing else.
"""

from pixmim.declare import Stage

STAGES = [Stage(
    name="knn_probe", module="tests.plugins.knn_probe.stage",
    help="k-NN top-1 on frozen features (a plugin stage)", rule="knn", job="options",
    section="knn_probe", data="images", columns={"knn": ("top1", "k-NN (%)")},
    params={"schema": {"required": ["k"],
                       "properties": {"k": {"type": "integer", "minimum": 1}}}},
    # ImageNet train (1,281,167) as the bank plus val (50,000) as queries, forward only.
    cost=dict(kind="images", images=1_331_167, passes="forward"),
)]
