"""Paper analyses that are not benchmarks: why PixMIM's two knobs help.

* :mod:`pixmim.analysis.frequency`: PSNR of a pretrained model's reconstruction per radial
  frequency band (PixMIM Fig. 1 and Fig. 5: MAE vs PixMIM).
* :mod:`pixmim.analysis.coverage`: object coverage J(F), the share of the foreground that a
  crop keeps, with and without MAE's random masking (PixMIM Fig. 3 and Fig. 6).

Each has a stage (``python -m pixmim frequency`` / ``coverage``); their figures are drawn
from the stages' files by :mod:`pixmim.report.plots`.
"""
