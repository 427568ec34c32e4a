"""The ``ofa`` command: ``ofa tasks``, ``ofa predict``, ``ofa evaluate``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

__all__ = ["main"]


def _options(pairs: Sequence[str], flag: str = "--option") -> dict[str, Any]:
    """``key=value`` pairs; values are read as JSON when they parse, else as strings."""
    from ofa.errors import ConfigError

    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair or not pair.split("=", 1)[0]:
            raise ConfigError(f"bad {flag} {pair!r}: expected key=value")
        key, value = pair.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _task(args: argparse.Namespace) -> Any:
    from ofa.tasks import get_task

    options = _options(args.option)
    if getattr(args, "candidates", None):
        options["candidates"] = [line.strip() for line in Path(args.candidates).read_text().splitlines()
                                 if line.strip()]
    return get_task(args.task, **options)


def _cmd_tasks(args: argparse.Namespace) -> int:
    from ofa.tasks import task_info

    rows = [{"task": p.name, "distribution": p.distribution, "object": p.value} for p in task_info()]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        width = max((len(r["task"]) for r in rows), default=4)
        for r in rows:
            print(f"{r['task']:<{width}}  {r['distribution']}  ({r['object']})")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from ofa.pipeline import Pipeline

    tokenizer = args.tokenizer or args.checkpoint
    runner = Pipeline(_task(args), args.checkpoint, tokenizer, batch_size=args.batch_size)
    images = list(args.images)
    texts: list[str] | None = None
    if args.text is not None:
        texts = args.text if len(args.text) > 1 else args.text * max(len(images), 1)
    examples = runner.examples(images or None, texts, **_options(args.field, "--field"))
    predictions = runner.predict_examples(examples)
    draw_dir = Path(args.draw) if args.draw else None
    if draw_dir is not None:
        draw_dir.mkdir(parents=True, exist_ok=True)
    from ofa.visualize import draw_prediction

    for i, (example, prediction) in enumerate(zip(examples, predictions)):
        source = images[i if len(images) > 1 else 0] if images else None  # one image may serve several texts
        record = {"input": source, "text": example.text, **prediction.to_dict()}
        record.pop("id", None)
        if draw_dir is not None and example.image is not None and source is not None:
            out = draw_dir / f"{i:04d}_{Path(source).stem}.png"
            draw_prediction(example.image, prediction).save(out)
            record["drawn"] = str(out)
        print(json.dumps(record, default=str))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from ofa.evaluation import evaluate, read_examples

    task = _task(args)
    bad_rows: list[tuple[int, str]] = []
    examples = read_examples(args.data, task, fmt=args.format, image_root=args.image_root,
                             max_bad_rows=args.max_bad_rows, limit=args.limit, bad_rows=bad_rows)
    metrics, _ = evaluate(task, args.checkpoint, args.tokenizer or args.checkpoint, examples,
                          batch_size=args.batch_size)
    print(json.dumps({"task": task.name, "examples": len(examples), "bad_rows": len(bad_rows), **metrics},
                     indent=2))
    return 0


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from ofa.quickstart import QuickstartConfig, run_quickstart

    config = QuickstartConfig(out=args.out, minutes=args.minutes, max_steps=args.steps, seed=args.seed,
                              progress=not args.no_progress)
    metrics = run_quickstart(config)
    print(json.dumps(metrics, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ofa", description="OFA: unified multimodal seq2seq models")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("tasks", help="list the installed tasks and their distributions")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_tasks)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--task", required=True, help="task name (see `ofa tasks`)")
        p.add_argument("--checkpoint", required=True, help="checkpoint file or directory")
        p.add_argument("--tokenizer", help="tokenizer directory (default: the checkpoint directory)")
        p.add_argument("--batch-size", type=int, default=8)
        p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                       help="task option, e.g. -o beam_size=3 (values parsed as JSON when possible)")
        p.add_argument("--candidates", help="file with one candidate answer per line (VQA and the like)")

    p = sub.add_parser("predict", help="predict for image files; prints one JSON line per input")
    common(p)
    p.add_argument("images", nargs="*", help="image files")
    # Repeated rather than nargs="+", which would swallow the image paths that follow it.
    p.add_argument("--text", "--prompt", action="append", help="the text input (expression, question, ...); "
                   "given once it applies to every image, repeated it gives one per image (in order)")
    p.add_argument("-f", "--field", action="append", default=[], metavar="KEY=VALUE",
                   help="an example field shared by all inputs, e.g. -f region=10,20,200,180 (region_caption) "
                   "or -f premise='a dog runs' (snli_ve); values parsed as JSON when possible")
    p.add_argument("--draw", help="directory to write each image with its prediction drawn on it")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("evaluate", help="score a task on a TSV/JSONL file; prints metrics as JSON")
    common(p)
    p.add_argument("--data", required=True, help="TSV (OFA layout) or JSONL file")
    p.add_argument("--format", choices=["tsv", "jsonl"], help="default: from the file extension")
    p.add_argument("--image-root", help="directory that JSONL image paths are relative to")
    p.add_argument("--limit", type=int, help="evaluate only the first N examples")
    p.add_argument("--max-bad-rows", type=int, default=100)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("quickstart", help="generate a synthetic world, train a small OFA on it on the CPU, "
                       "evaluate, and write metrics, plots and a checkpoint")
    p.add_argument("--out", default="quickstart", help="output directory (default: ./quickstart)")
    p.add_argument("--minutes", type=float, default=10.0, help="time budget of the whole run (default 10)")
    p.add_argument("--steps", type=int, help="train exactly this many steps instead of sizing to --minutes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_quickstart)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from ofa.errors import OFAError

    try:
        return int(args.func(args) or 0)
    except OFAError as exc:
        print(f"ofa {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
