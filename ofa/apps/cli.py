"""The ``ofa`` command: ``ofa tasks``, ``ofa predict``, ``ofa evaluate``, ``ofa quickstart``, and the text-to-image
tools ``ofa generate-image``, ``ofa train-vqgan``, ``ofa encode-images`` and ``ofa quickstart-image``, and
``ofa quickstart-pretrain``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence, cast

__all__ = ["main"]


def _options(pairs: Sequence[str], flag: str = "--option") -> dict[str, Any]:
    """``key=value`` pairs; values are read as JSON when they parse, else as strings."""
    # import cost: a subcommand loads only what it runs
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


def _task_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``-o`` options, plus ``candidates`` read from ``--candidates`` when given."""
    # import cost: a subcommand loads only what it runs
    from ofa.errors import InputError

    options = _options(args.option)
    if getattr(args, "candidates", None):
        path = Path(args.candidates)
        if not path.is_file():
            raise InputError(f"--candidates file {str(path)!r} does not exist")
        options["candidates"] = [line.strip() for line in path.read_text().splitlines()
                                 if line.strip()]
    return options


def _task(args: argparse.Namespace) -> Any:
    # import cost: a subcommand loads only what it runs
    from ofa.tasks import get_task

    return get_task(args.task, **_task_options(args))


def _require(modules: Sequence[str], command: str, extra: str) -> None:
    """Import the optional ``modules`` a subcommand needs, or say which extra installs them."""
    # import cost: a subcommand loads only what it runs
    import importlib

    try:
        for module in modules:
            importlib.import_module(module)  # optional dependency: the subcommand's extra
    except ImportError:
        # import cost: a subcommand loads only what it runs
        from ofa.errors import ConfigError

        raise ConfigError(f"{command} needs {' and '.join(modules)}: pip install 'ofa-unified[{extra}]'") from None


def _cmd_tasks(args: argparse.Namespace) -> int:
    # import cost: a subcommand loads only what it runs
    from ofa.tasks import task_info

    rows = [{"task": p.name, "distribution": p.distribution, "object": p.value} for p in task_info()]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        width = max((len(r["task"]) for r in rows), default=4)
        for r in rows:
            print(f"{r['task']:<{width}}  {r['distribution']}  ({r['object']})")
    return 0


_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _model(args: argparse.Namespace) -> Any:
    """The checkpoint path, or the model loaded (with ``--trust-pickle`` / in ``--dtype``) when needed."""
    dtype_name = _DTYPES[getattr(args, "dtype", "fp32")]
    if not args.trust_pickle and dtype_name == "float32":
        return args.checkpoint
    # import cost: a subcommand loads only what it runs
    import torch

    # import cost: a subcommand loads only what it runs
    from ofa.checkpoint import load_checkpoint

    return load_checkpoint(args.checkpoint, trust_pickle=args.trust_pickle, dtype=getattr(torch, dtype_name))


def _keeps_memory(args: argparse.Namespace) -> bool:
    """Whether this command keeps freed memory for reuse (:func:`ofa.runtime.keep_freed_memory`): yes unless
    ``--system-malloc`` or the environment variable ``OFA_SYSTEM_MALLOC=1`` (the setting is process-wide: a program
    that calls :func:`main` in its own process may not want it)."""
    # import cost: a subcommand loads only what it runs
    import os

    return not (getattr(args, "system_malloc", False) or os.environ.get("OFA_SYSTEM_MALLOC") == "1")


def _allocator(args: argparse.Namespace) -> None:
    """Apply :func:`_keeps_memory`'s choice to this process."""
    if _keeps_memory(args):
        # import cost: a subcommand loads only what it runs
        from ofa.runtime import keep_freed_memory

        keep_freed_memory()


def _system_malloc_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--system-malloc", action="store_true",
                   help="leave glibc's allocator as it is; by default freed memory is kept for reuse, which "
                        "made batched generation 13-25%% faster on a 2-core box and keeps the process's "
                        "memory at its peak (same results either way; OFA_SYSTEM_MALLOC=1 does the same)")


def _examples(args: argparse.Namespace, task: Any) -> tuple[list[Any], int]:
    """The examples of ``--data`` and the number of bad rows skipped."""
    # import cost: a subcommand loads only what it runs
    from ofa.evaluation import read_examples

    bad_rows: list[tuple[int, str]] = []
    examples = read_examples(args.data, task, fmt=args.format, image_root=args.image_root,
                             max_bad_rows=args.max_bad_rows, max_bad_fraction=args.max_bad_fraction,
                             limit=args.limit, bad_rows=bad_rows)
    return examples, len(bad_rows)


def _distributed() -> Any:
    """Join the process group torchrun / the DeepSpeed launcher describe in the environment (none: one process)."""
    # import cost: a subcommand loads only what it runs
    from ofa.trainer.distributed import init_distributed

    return init_distributed()


def _predict_data(args: argparse.Namespace) -> int:
    """``ofa predict --data``: each rank predicts its shard of the file; ``--out`` gets one JSONL per rank, merged
    in input order into ``predictions.jsonl`` by rank 0."""
    # import cost: a subcommand loads only what it runs
    import torch.distributed as dist

    # import cost: a subcommand loads only what it runs
    from ofa.errors import ConfigError
    from ofa.evaluation import merge_prediction_shards, shard_bounds, write_prediction_shard
    from ofa.pipeline import Pipeline

    if args.images or args.text or args.field or args.draw:
        raise ConfigError("--data replaces image files, --text, --field and --draw; give one or the other")
    info = _distributed()
    if info.world_size > 1 and not args.out:
        raise ConfigError(f"{info.world_size} processes need --out DIR (each writes its shard, rank 0 merges them)")
    task = _task(args)
    examples, bad = _examples(args, task)
    runner = Pipeline(task, _model(args), args.tokenizer or args.checkpoint, batch_size=args.batch_size,
                      literal_text=False, device=info.device, progress=None if info.is_main else False)
    start, end = shard_bounds(len(examples), info.rank, info.world_size)
    predictions = runner.predict_examples(examples[start:end])
    if not args.out:
        for index, prediction in enumerate(predictions):
            print(json.dumps({"index": index, **prediction.to_dict()}, default=str), flush=True)
        return 0
    write_prediction_shard(args.out, predictions, start, info.rank, info.world_size)
    if info.world_size > 1:
        dist.barrier()
    if info.is_main:
        merged = merge_prediction_shards(args.out, expected=len(examples))
        print(json.dumps({"task": task.name, "examples": len(examples), "bad_rows": bad, "processes":
                          info.world_size, "predictions": str(merged)}, indent=2))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    # import cost: a subcommand loads only what it runs
    from ofa.pipeline import Pipeline

    _allocator(args)
    if args.data:
        return _predict_data(args)

    draw_dir = Path(args.draw) if args.draw else None
    if draw_dir is not None and draw_dir.exists() and not draw_dir.is_dir():  # checked before any work
        # import cost: a subcommand loads only what it runs
        from ofa.errors import InputError

        raise InputError(f"--draw {str(draw_dir)!r} is a file; it must be a directory (created if missing)")
    tokenizer = args.tokenizer or args.checkpoint
    runner = Pipeline(_task(args), _model(args), tokenizer, batch_size=args.batch_size)
    images = list(args.images)
    texts: list[str] | None = None
    if args.text is not None:
        texts = args.text if len(args.text) > 1 else args.text * max(len(images), 1)
    if draw_dir is not None:
        draw_dir.mkdir(parents=True, exist_ok=True)
    # import cost: a subcommand loads only what it runs
    from ofa.apps.visualize import draw_prediction
    from ofa.pipeline import Failure

    failed = total = 0
    # Streamed: each batch's images are decoded, predicted, drawn and released before the next batch is read.
    stream = runner.stream(images or None, texts, errors="record", **_options(args.field, "--field"))
    for i, (example, result) in enumerate(stream):
        total += 1
        source = images[i if len(images) > 1 else 0] if images else None  # one image may serve several texts
        text = texts[i if len(texts) > 1 else 0] if texts else None
        record: dict[str, Any] = {"input": source, "text": text}
        if isinstance(result, Failure):
            failed += 1
            record["error"] = result.to_dict()["error"]
            print(f"ofa predict: input {i} ({source if source is not None else text!r}): {record['error']}",
                  file=sys.stderr)
        else:
            record.update(result.to_dict())
            record.pop("id", None)
            if draw_dir is not None and example is not None and example.image is not None and source is not None:
                out = draw_dir / f"{i:04d}_{Path(source).stem}.png"
                draw_prediction(example.image, result).save(out)
                record["drawn"] = str(out)
        print(json.dumps(record, default=str), flush=True)
    if failed:
        print(f"ofa predict: {failed} of {total} inputs failed (their records carry an 'error')", file=sys.stderr)
        return 2
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    # import cost: a subcommand loads only what it runs
    from ofa.evaluation import evaluate

    _allocator(args)
    info = _distributed()
    task = _task(args)
    examples, bad = _examples(args, task)
    metrics, _ = evaluate(task, _model(args), args.tokenizer or args.checkpoint, examples,
                          batch_size=args.batch_size, device=info.device, distributed=info.world_size > 1)
    if info.is_main:
        print(json.dumps({"task": task.name, "examples": len(examples), "bad_rows": bad, **metrics}, indent=2))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    # import cost: a subcommand loads only what it runs
    import time

    # import cost: a subcommand loads only what it runs
    from ofa.checkpoint import load_checkpoint
    from ofa.export import export_model

    if args.format == "onnx":
        _require(["onnx", "onnxscript"], "ONNX export", "export")
    start = time.perf_counter()
    model = load_checkpoint(args.checkpoint, trust_pickle=args.trust_pickle)
    out = export_model(model, args.out, format=args.format, image_size=args.image_size)
    tokenizer = Path(args.tokenizer or args.checkpoint)
    if tokenizer.is_dir():  # the export directory is self-contained when the tokenizer files are at hand
        # import cost: a subcommand loads only what it runs
        from ofa.errors import TokenizationError
        from ofa.pipeline import load_tokenizer

        try:
            load_tokenizer(tokenizer).save_pretrained(out)
        except TokenizationError:
            pass  # a checkpoint without tokenizer files: the export is still complete
    print(json.dumps({"format": args.format, "out": str(out), "files": sorted(p.name for p in out.iterdir()),
                      "seconds": round(time.perf_counter() - start, 1)}, indent=2))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    _require(["gradio"], "ofa demo", "demo")
    # import cost: a subcommand loads only what it runs
    from ofa.apps.demo import build_demo

    demo = build_demo(args.checkpoint, args.tokenizer, options=_options(args.option), device=args.device)
    demo.launch(server_name=args.host, server_port=args.port, share=False, show_error=True)
    return 0


def _stop_on_sigterm() -> None:
    """SIGTERM (``kill``, a process manager) shuts the server down as Ctrl-C does: LitServe then stops its worker
    and API processes instead of leaving them orphaned. Forked children keep the default (terminate) behaviour."""
    # import cost: a subcommand loads only what it runs
    import os
    import signal

    main_pid = os.getpid()

    def stop(signum: int, frame: Any) -> None:
        if os.getpid() != main_pid:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def _cmd_serve(args: argparse.Namespace) -> int:
    _require(["litserve"], "ofa serve", "serve")
    # import cost: a subcommand loads only what it runs
    from ofa.apps.serve import build_server

    options = _task_options(args)
    _task(args)  # an unknown task or bad option fails here, before any worker starts
    _stop_on_sigterm()
    server = build_server(args.task, args.checkpoint, args.tokenizer, max_batch_size=args.max_batch_size,
                          batch_timeout=args.batch_timeout, workers_per_device=args.workers, task_options=options,
                          keep_freed_memory=_keeps_memory(args),
                          log_level=logging.INFO if args.verbose else logging.WARNING)
    server.run(host=args.host, port=args.port, generate_client_file=False,
               log_level="info" if args.verbose else "warning")
    return 0


def _cmd_quickstart(args: argparse.Namespace) -> int:
    # import cost: a subcommand loads only what it runs
    from ofa.apps.quickstart import QuickstartConfig, run_quickstart

    config = QuickstartConfig(out=args.out, minutes=args.minutes, max_steps=args.steps, seed=args.seed,
                              progress=not args.no_progress)
    metrics = run_quickstart(config)
    print(json.dumps(metrics, indent=2))
    return 0


def _cmd_quickstart_image(args: argparse.Namespace) -> int:
    # import cost: a subcommand loads only what it runs
    from ofa.apps.quickstart_image import ImageQuickstartConfig, run_image_quickstart

    config = ImageQuickstartConfig(out=args.out, minutes=args.minutes, vqgan_steps=args.vqgan_steps,
                                   t2i_steps=args.t2i_steps, seed=args.seed, progress=not args.no_progress)
    metrics = run_image_quickstart(config)
    print(json.dumps(metrics, indent=2))
    return 0


def _cmd_quickstart_pretrain(args: argparse.Namespace) -> int:
    # import cost: a subcommand loads only what it runs
    from ofa.apps.quickstart_pretrain import PretrainQuickstartConfig, run_pretrain_quickstart

    config = PretrainQuickstartConfig(out=args.out, minutes=args.minutes, pretrain_steps=args.pretrain_steps,
                                      finetune_steps=args.finetune_steps, vqgan_steps=args.vqgan_steps,
                                      seed=args.seed, progress=not args.no_progress)
    metrics = run_pretrain_quickstart(config)
    print(json.dumps(metrics, indent=2))
    return 0


def _cmd_generate_image(args: argparse.Namespace) -> int:
    # import cost: a subcommand loads only what it runs
    from ofa.checkpoint import load_checkpoint

    # import cost: a subcommand loads only what it runs
    from ofa.errors import ConfigError

    # import cost: a subcommand loads only what it runs
    from ofa.pipeline import Pipeline

    # import cost: a subcommand loads only what it runs
    from ofa.tasks.image_gen import ImageGenPrediction, ImageGenTask

    if not args.prompts:
        raise ConfigError("give at least one prompt")
    model = load_checkpoint(args.checkpoint).to(args.device or "cpu").eval()
    code_image_size = model.config.code_image_size
    if code_image_size % 8:
        raise ConfigError(f"the model's code_image_size ({code_image_size}) is not a multiple of 8")
    task = ImageGenTask(grid_size=code_image_size // 8, num_samples=args.num, top_k=args.top_k, top_p=args.top_p,
                        seed=args.seed, vqgan=args.vqgan, scorer=args.scorer)
    assert task.vqgan is not None
    task.vqgan.to(args.device or "cpu")
    runner = Pipeline(task, model, args.tokenizer or args.checkpoint, batch_size=args.batch_size,
                      device=args.device)
    predictions = [cast(ImageGenPrediction, p)  # what ImageGenTask predicts
                   for p in runner.predict_examples(runner.examples(None, list(args.prompts)))]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for index, (prompt, prediction) in enumerate(zip(args.prompts, predictions)):
        paths = []
        for rank, image in enumerate(prediction.images):
            path = out / f"prompt{index:03d}_rank{rank:02d}.png"
            image.save(path)
            paths.append(str(path))
        print(json.dumps({"prompt": prompt, "images": paths, "model_scores": prediction.sample_scores,
                          "scorer_scores": prediction.scorer_scores, "ranking": prediction.ranking}))
    return 0


def _cmd_train_vqgan(args: argparse.Namespace) -> int:
    # import cost: a subcommand loads only what it runs
    from ofa.errors import ConfigError

    # import cost: a subcommand loads only what it runs
    from ofa.vqgan import VQGAN_PRESETS, VQGANConfig, load_vqgan, train_vqgan

    if args.resume:
        if args.config or args.option:
            raise ConfigError("--resume continues a saved VQGAN with its own architecture; drop --config/-o")
        model: Any = load_vqgan(args.resume)
    else:
        if args.config:
            config = VQGANConfig.from_dict(json.loads(Path(args.config).read_text(encoding="utf-8")))
        else:
            config = VQGAN_PRESETS[args.preset]
        model = VQGANConfig.from_dict({**config.to_dict(), **_options(args.option)})  # unknown keys raise
    result = train_vqgan(args.data, model, steps=args.steps, lr=args.lr, batch_size=args.batch_size,
                         image_size=args.image_size, temperature=(args.temperature[0], args.temperature[1]),
                         reconstruction=args.loss, out_dir=args.out, save_every=args.save_every,
                         log_every=args.log_every, seed=args.seed, device=args.device,
                         image_column=args.image_column, limit=args.limit, progress=not args.no_progress)
    trained = [r for r in result.history if "eval" not in r]
    summary = {"out": str(result.out_dir), "steps": args.steps, "config": result.model.config.to_dict(),
               "grid_size": (args.image_size or result.model.config.resolution) // result.model.downsample_factor,
               "final_loss": trained[-1]["loss"] if trained else None,
               "eval": {k: v for k, v in result.history[-1].items() if k in ("l1", "l2", "codes_used")}}
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_encode_images(args: argparse.Namespace) -> int:
    # import cost: a subcommand loads only what it runs
    from ofa.vqgan.codes import write_image_gen_tsv

    summary = write_image_gen_tsv(args.data, args.out, args.vqgan, image_size=args.image_size,
                                  captions=args.captions, fmt=args.format, id_column=args.id_column,
                                  caption_column=args.caption_column, image_column=args.image_column,
                                  image_root=args.image_root, batch_size=args.batch_size, limit=args.limit,
                                  progress=not args.no_progress)
    print(json.dumps(summary, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ofa", description="OFA: unified multimodal seq2seq models")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    # the DeepSpeed launcher passes --local_rank; the rank is read from the environment (LOCAL_RANK) anyway
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("tasks", help="list the installed tasks and their distributions")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_tasks)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--task", required=True, help="task name (see `ofa tasks`)")
        p.add_argument("--checkpoint", required=True,
                       help="checkpoint file or directory, or a Hugging Face Hub id such as OFA-Sys/ofa-base")
        p.add_argument("--revision", help="branch, tag or commit of a Hub id (default main)")
        p.add_argument("--tokenizer", help="tokenizer directory (default: the checkpoint directory)")
        p.add_argument("--batch-size", type=int, default=8)
        p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                       help="task option, e.g. -o beam_size=3 (values parsed as JSON when possible)")
        p.add_argument("--candidates", help="file with one candidate answer per line (VQA and the like)")
        p.add_argument("--trust-pickle", action="store_true",
                       help="unpickle a checkpoint holding objects other than tensors (runs code from the file: "
                            "only for files you trust)")
        p.add_argument("--dtype", choices=sorted(_DTYPES), default="fp32",
                       help="compute dtype of the model (default fp32; bf16 is fast only on CPUs with bf16 "
                            "instructions, and on GPUs)")
        _system_malloc_option(p)

    def data_options(p: argparse.ArgumentParser, required: bool) -> None:
        p.add_argument("--data", required=required, help="TSV (OFA layout) or JSONL file" +
                       ("" if required else " to predict for instead of image files"))
        p.add_argument("--format", choices=["tsv", "jsonl"], help="default: from the file extension")
        p.add_argument("--image-root", help="directory that JSONL image paths are relative to")
        p.add_argument("--limit", type=int, help="only the first N examples")
        p.add_argument("--max-bad-rows", type=int, default=100)
        p.add_argument("--max-bad-fraction", type=float, default=0.5,
                       help="fail (exit 2) when more than this fraction of the rows cannot be read (default 0.5)")

    p = sub.add_parser("predict", help="predict for image files (or a --data file); prints one JSON line per "
                       "input")
    common(p)
    p.add_argument("images", nargs="*", help="image files")
    # Repeated rather than nargs="+", which would swallow the image paths that follow it.
    p.add_argument("--text", "--prompt", action="append", help="the text input (expression, question, ...); "
                   "given once it applies to every image, repeated it gives one per image (in order)")
    p.add_argument("-f", "--field", action="append", default=[], metavar="KEY=VALUE",
                   help="an example field shared by all inputs, e.g. -f region=10,20,200,180 (region_caption) "
                   "or -f premise='a dog runs' (snli_ve); values parsed as JSON when possible")
    p.add_argument("--draw", help="directory to write each image with its prediction drawn on it")
    data_options(p, required=False)
    p.add_argument("--out", help="with --data: directory for predictions.jsonl (one shard per process, merged in "
                   "input order); required with several processes")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("evaluate", help="score a task on a TSV/JSONL file; prints metrics as JSON (under torchrun "
                       "or the DeepSpeed launcher the examples are sharded across the processes)")
    common(p)
    data_options(p, required=True)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("demo", help="a web page like OFA's Spaces (gradio): upload an image, pick caption, "
                       "grounding or VQA, see the answer")
    p.add_argument("--checkpoint", required=True, help="checkpoint file or directory, or a Hub id")
    p.add_argument("--revision", help="branch, tag or commit of a Hub id (default main)")
    p.add_argument("--tokenizer", help="tokenizer directory (default: the checkpoint directory)")
    p.add_argument("-o", "--option", action="append", default=[], metavar="[TASK.]KEY=VALUE",
                   help="task option for every task (image_size=480) or one (refcoco.max_image_size=512)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--device", help="torch device (default cpu)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("export", help="export the encoder and the incremental decoder step (KV cache as explicit "
                       "inputs/outputs, dynamic batch and length) to ONNX or torch.export")
    p.add_argument("--checkpoint", required=True, help="checkpoint file or directory, or a Hub id")
    p.add_argument("--revision", help="branch, tag or commit of a Hub id (default main)")
    p.add_argument("--tokenizer", help="tokenizer directory copied into the export (default: the checkpoint's)")
    p.add_argument("--format", choices=["onnx", "torch-export"], default="onnx")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--image-size", type=int, help="side of the tracing example images (default: the config's)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="unpickle a checkpoint holding objects other than tensors (only for files you trust)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("serve", help="serve a task over HTTP (LitServe, dynamic batching): POST /predict with "
                       '{"image": base64, "text": ..., "fields": {...}}')
    p.add_argument("--task", required=True, help="task name, e.g. caption, refcoco, vqa_gen")
    p.add_argument("--checkpoint", required=True, help="checkpoint file or directory, or a Hub id")
    p.add_argument("--revision", help="branch, tag or commit of a Hub id (default main)")
    p.add_argument("--tokenizer", help="tokenizer directory (default: the checkpoint directory)")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="task option, e.g. -o beam_size=3 (values parsed as JSON when possible)")
    p.add_argument("--candidates", help="file with one candidate answer per line (VQA and the like)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch-size", type=int, default=8, help="most requests predicted together (default 8)")
    p.add_argument("--batch-timeout", type=float, default=0.01,
                   help="seconds a batch waits to fill before it runs (default 0.01)")
    p.add_argument("--workers", type=int, default=1, help="model worker processes per device (default 1)")
    _system_malloc_option(p)
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("quickstart", help="generate a synthetic world, train a small OFA on it on the CPU, "
                       "evaluate, and write metrics, plots and a checkpoint")
    p.add_argument("--out", default="quickstart", help="output directory (default: ./quickstart)")
    p.add_argument("--minutes", type=float, default=10.0, help="time budget of the whole run (default 10)")
    p.add_argument("--steps", type=int, help="train exactly this many steps instead of sizing to --minutes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_quickstart)

    p = sub.add_parser("quickstart-image", help="text-to-image on the CPU: generate a shape world, train a tiny "
                       "VQGAN and a small OFA on it, sample images for held-out captions, and write metrics, a "
                       "gallery and both models")
    p.add_argument("--out", default="quickstart_image", help="output directory (default: ./quickstart_image)")
    p.add_argument("--minutes", type=float, default=10.0, help="time budget of the whole run (default 10)")
    p.add_argument("--vqgan-steps", type=int, help="train the VQGAN exactly this many steps (default: sized to "
                   "--minutes)")
    p.add_argument("--t2i-steps", type=int, help="train the text-to-image model exactly this many steps (default: "
                   "sized to --minutes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_quickstart_image)

    p = sub.add_parser("quickstart-pretrain", help="OFA's unified pretraining on the CPU: pretrain a small OFA on "
                       "a shape world's pretraining mixture, then compare few-shot fine-tuning from it and from "
                       "scratch, zero-shot grounded QA and infilling; writes metrics.json and pictures")
    p.add_argument("--out", default="quickstart_pretrain", help="output directory (default: ./quickstart_pretrain)")
    p.add_argument("--minutes", type=float, default=30.0, help="time budget of the whole run (default 30)")
    p.add_argument("--pretrain-steps", type=int, help="pretrain exactly this many steps (default: sized to --minutes)")
    p.add_argument("--finetune-steps", type=int, help="fine-tune exactly this many steps (default: sized)")
    p.add_argument("--vqgan-steps", type=int, help="train the VQGAN exactly this many steps (default: sized)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_quickstart_pretrain)

    p = sub.add_parser("generate-image", help="text-to-image: sample code grids, decode them with a VQGAN, "
                       "rerank, write PNGs (best first) and print one JSON line per prompt")
    p.add_argument("prompts", nargs="+", metavar="PROMPT", help="the captions to draw")
    p.add_argument("--checkpoint", required=True, help="model checkpoint (file or directory, or a Hub id)")
    p.add_argument("--revision", help="branch, tag or commit of a Hub id (default main)")
    p.add_argument("--tokenizer", help="tokenizer directory (default: the checkpoint directory)")
    p.add_argument("--vqgan", required=True, help="VQGAN folder (save_pretrained) or taming checkpoint")
    p.add_argument("--num", type=int, default=4, help="samples per prompt (default 4; OFA draws 24)")
    p.add_argument("--out", required=True, help="directory for the PNGs (promptNNN_rankRR.png)")
    p.add_argument("--seed", type=int, help="sampling seed (prompt i uses seed + i); default: random")
    p.add_argument("--top-k", type=int, default=256, help="sample among the k most likely codes (default 256)")
    p.add_argument("--top-p", type=float, default=-1.0, help="nucleus sampling mass (default: off)")
    p.add_argument("--scorer", default="color", help="reranker: 'color' (colour words; default) or 'none' "
                   "(model score order)")
    p.add_argument("--batch-size", type=int, default=1, help="prompts per forward pass (default 1)")
    p.add_argument("--device", help="where to run, e.g. cuda (default: cpu)")
    p.set_defaults(func=_cmd_generate_image)

    p = sub.add_parser("train-vqgan", help="train a VQGAN (reconstruction + KL) on the images of a TSV/JSONL "
                       "file, so a new image domain can be tokenised; prints a JSON summary")
    p.add_argument("--data", required=True, help="TSV with a base64 image column (e.g. caption_train.tsv) or JSONL")
    p.add_argument("--out", required=True, help="output folder (config.json, weights.pt, train_log.jsonl)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--preset", choices=["test", "small-f8", "gumbel-f8"], default="small-f8",
                   help="architecture (default small-f8: factor 8, 8192 codes)")
    p.add_argument("--config", help="a JSON file of VQGANConfig fields (instead of --preset)")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="VQGANConfig override, e.g. -o num_codes=64 -o resolution=32 (values parsed as JSON)")
    p.add_argument("--resume", help="keep training a saved VQGAN folder (its architecture is kept)")
    p.add_argument("--image-size", type=int, help="training image side (default: the config's resolution)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--loss", choices=["l1", "l2"], default="l1", help="reconstruction term (default l1)")
    p.add_argument("--temperature", type=float, nargs=2, default=[0.9, 1.0 / 16], metavar=("START", "END"),
                   help="Gumbel-softmax temperature, cosine-annealed (default 0.9 -> 0.0625)")
    p.add_argument("--image-column", type=int, default=-1, help="TSV image column (default: the last)")
    p.add_argument("--limit", type=int, help="read at most this many images")
    p.add_argument("--save-every", type=int, default=0, help="also save every N steps (default: at the end)")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_train_vqgan)

    p = sub.add_parser("encode-images", help="turn an image-caption TSV/JSONL into the image_gen TSV layout "
                       "(uniq_id, codes, caption) with a VQGAN; prints a JSON summary")
    p.add_argument("--data", required=True, help="TSV with a base64 image column (OFA caption layout) or JSONL")
    p.add_argument("--vqgan", required=True, help="VQGAN folder (save_pretrained) or taming checkpoint")
    p.add_argument("--out", required=True, help="the image_gen TSV to write")
    p.add_argument("--image-size", type=int, help="side images are resized to (default: the VQGAN's "
                   "resolution); the grid side is image-size / the VQGAN's downsampling factor")
    p.add_argument("--captions", choices=["first", "all"], default="first",
                   help="one row per image (its first caption) or one per caption")
    p.add_argument("--format", choices=["tsv", "jsonl"], help="default: from the file extension")
    p.add_argument("--id-column", type=int, default=0)
    p.add_argument("--caption-column", type=int, default=2)
    p.add_argument("--image-column", type=int, default=-1, help="default: the last column")
    p.add_argument("--image-root", help="folder JSONL image paths are relative to (default: the file's)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--limit", type=int, help="encode only the first N images")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_encode_images)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    # import cost: a subcommand loads only what it runs
    from ofa.errors import OFAError

    try:
        if getattr(args, "checkpoint", None) is not None:  # a Hub id becomes its local snapshot folder, once
            # import cost: a subcommand loads only what it runs
            from ofa.hub import resolve_source

            args.checkpoint = str(resolve_source(args.checkpoint, revision=args.revision))
        return int(args.func(args) or 0)
    except OFAError as exc:
        print(f"ofa {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
