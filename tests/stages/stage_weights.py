"""Run a training stage as its CLI does and keep, per process, the weights its training loop
starts and ends with (``start_rank<R>.pth``, ``weights_rank<R>.pth`` in the output folder;
the probe writes no model file).

``python -m tests.stages.stage_weights STAGE --config FILE --out DIR``, alone or under
``torch.distributed.run``.
"""

import importlib
import os
import sys
from pathlib import Path

import torch


def main(argv: list[str]) -> int:
    stage, rest = argv[0], argv[1:]
    module = importlib.import_module(f"pixmim.stages.{stage}")
    out = Path(rest[rest.index("--out") + 1])
    fit = module.fit

    def keep(trained, name):
        out.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().clone() for k, v in trained.state_dict().items()},
                   out / f"{name}_rank{os.environ.get('RANK', '0')}.pth")

    def keeping_weights(trained, *args, **kwargs):
        keep(trained, "start")
        history = fit(trained, *args, **kwargs)
        keep(trained, "weights")
        return history

    module.fit = keeping_weights
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
