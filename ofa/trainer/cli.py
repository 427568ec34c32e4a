"""``ofa-train``: fine-tune from a config file plus ``key=value`` overrides.

Runs as a single plain process, under ``torchrun`` or under the ``deepspeed`` launcher (which passes
``--local_rank``/``--local-rank``); rank and world size come from the environment.

    ofa-train --config run.json lr=1e-4 output_dir=runs/x
    torchrun --nproc_per_node 2 -m ofa.trainer.cli --config run.json
    deepspeed --num_gpus 8 $(which ofa-train) --config run.json engine=deepspeed engine.zero_stage=2
    ofa-train --config run.json --resume runs/x
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Sequence

from ofa.errors import OFAError
from ofa.trainer.config import TrainerConfig
from ofa.trainer.trainer import Trainer

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ofa-train", description="Fine-tune an OFA model",
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--config", help="JSON or YAML trainer config")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--resume", help="checkpoint directory, or a run directory (its newest intact checkpoint)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start afresh in an output_dir that holds another run, deleting its checkpoints and log")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="on --resume, unpickle files holding objects other than tensors (runs code from them: "
                             "only for run directories you trust)")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help="set by launchers")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Intermixed: overrides may come before and after options (`lr=1e-4 --resume runs/x seed=2`); the deepspeed
    # launcher also puts --local_rank first.
    args = build_parser().parse_intermixed_args(argv)
    if args.local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if args.verbose and rank == 0 else logging.WARNING,
                        format=f"[rank {rank}] %(levelname)s %(name)s: %(message)s")
    try:
        config = TrainerConfig.from_file(args.config, args.overrides)
        trainer = Trainer(config, resume=args.resume, overwrite=args.overwrite, trust_pickle=args.trust_pickle,
                          progress=not args.no_progress)
        metrics = trainer.train()
    except OFAError as exc:
        print(f"ofa-train: error: {exc}", file=sys.stderr)
        return 2
    if rank == 0:
        print(json.dumps({"step": trainer.step, "valid": metrics}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
