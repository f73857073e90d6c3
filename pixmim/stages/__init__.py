"""One module per stage, each exposing ``run(cfg, out) -> dict`` and ``main(argv)``; their
declarations (rule, inputs, outputs, columns, cost) are in :mod:`pixmim.pipeline`."""
