"""PixMIM Bench: a reference pipeline for reproducing PixMIM (TMLR 2024).

The package root imports no torch: the Snakefile imports the torch-free parts
(:mod:`pixmim.config`, :mod:`pixmim.workflow`, :mod:`pixmim.report`) at every DAG build.
"""

__version__ = "0.1.0"
