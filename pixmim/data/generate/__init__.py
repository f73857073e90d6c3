"""The generators of the embedded stand-in data, apart from the readers of real datasets.

Deterministic and torch-free; each writes its data in a real dataset's on-disk layout, so
the readers of :mod:`pixmim.data` read it unchanged. One module per generator, each a
command of ``python -m pixmim data`` (its docstring says what it writes):

* ``synth``: the synthetic-shapes ImageFolder (the embedded default's ImageNet);
* ``views``: its evaluation views, ImageNet-C/-A/-R/-Sketch-like and cue-conflict; the
  ImageNet-C-like view applies the corruptions of ``corruptions``;
* ``scenes``: multi-object scenes in ADE20K's and COCO's layouts (the dense stages);
* ``fixtures``: tiny datasets in every real dataset's own layout (the dress rehearsal).

The arrow points one way: a generator imports readers (a class list, a layout), a reader
never imports this package (``tests/data/test_imports.py`` checks it).
"""
