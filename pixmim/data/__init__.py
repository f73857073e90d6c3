"""Data: the readers of the datasets the stages train and evaluate on.

The datasets and their deterministic sampler (``datasets``), the pretraining loader
(``loading``), the crops and evaluation transforms (``transforms``), ImageNet's class lists
(``imagenet_meta``) and the real datasets' on-disk layouts (``layouts``). They read a real
dataset and an embedded stand-in through the same code.

The generators of the embedded stand-in data live apart, in :mod:`pixmim.data.generate`.
The arrow points one way: a generator imports readers (a class list, a layout), a reader
never imports :mod:`pixmim.data.generate` (``tests/data/test_imports.py`` checks it).
"""
