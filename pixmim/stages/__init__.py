"""One module per stage, each exposing ``run(cfg, out) -> dict`` and ``main(argv)``."""
