"""All-candidate VQA: :func:`ofa.generation.rank_candidates` against a per-candidate loop, same scores.

One image-question, ``--candidates`` answers (VQAv2's answer list has 3,129) of 1-3 random text tokens, a random
``--model`` (default ``ofa-tiny``) with the official 59,457-id vocabulary, ``--image-size`` px, fp32:

* ``ours``: ``rank_candidates`` (the ``allcand`` mode of the VQA task), trie-constrained as OFA scores them;
* ``baseline_per_candidate``: the encoder and cross-attention state computed once, then one teacher-forced decoder
  pass per candidate, each position's logits restricted to the trie's continuations, log-softmax, sum.

Checks that every candidate's score agrees (max abs difference reported) and that the rankings' top answers match.
Prints JSON with both times, the ratio and the box's matmul GFLOP/s.

    python benchmarks/bench_vqa_allcand.py [--candidates 3129] [--model ofa-tiny] [--image-size 480]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, environment  # noqa: E402

VOCAB = 59457  # the official OFA dictionary: 50,265 text ids (with specials) + 8,192 codes + 1,000 bins


def _gflops() -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(2):
        a @ b
    start, n = time.perf_counter(), 10
    for _ in range(n):
        a @ b
    return round(2 * 2048**3 / ((time.perf_counter() - start) / n) / 1e9, 1)


def _candidates(n: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    out: set[tuple[int, ...]] = set()
    while len(out) < n:
        length = int(torch.randint(1, 4, (1,), generator=g))
        out.add(tuple(int(t) for t in torch.randint(4, 50_000, (length,), generator=g)))
    return [list(c) for c in sorted(out)]


@torch.no_grad()
def per_candidate(model: torch.nn.Module, src: torch.Tensor, images: torch.Tensor,
                  candidates: list[list[int]]) -> list[float]:
    from ofa.generation.trie import Trie

    cfg = model.config
    trie = Trie.from_answers(candidates, cfg.bos_id, cfg.eos_id)
    encoder_out = model.encode(src, patch_images=images, patch_masks=torch.ones(1, dtype=torch.bool))
    cross = model.decoder.prepare(encoder_out)
    scores = []
    for cand in candidates:
        prev = torch.tensor([[cfg.bos_id, *cand]])
        logits = model.decode(prev, cross).logits.float()[0]
        targets = torch.tensor(cand + [cfg.eos_id])
        allowed = torch.zeros_like(logits, dtype=torch.bool)
        for k in range(len(cand) + 1):
            allowed[k, trie.next_tokens([cfg.bos_id] + cand[:k])] = True
        lprobs = torch.log_softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1)
        scores.append(float(lprobs.gather(-1, targets[:, None]).sum()))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=3129)
    parser.add_argument("--model", default="ofa-tiny")
    parser.add_argument("--image-size", type=int, default=480)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import ofa
    from ofa.generation import rank_candidates

    torch.manual_seed(0)
    model = ofa.build_model(args.model, vocab_size=VOCAB).eval()
    src = torch.tensor([[0, 99, 16, 5, 313, 608, 116, 2]])  # " what is the man doing?"
    images = torch.rand(1, 3, args.image_size, args.image_size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    candidates = _candidates(args.candidates, seed=2)

    def ours() -> list[float]:
        (ranked,) = rank_candidates(model, src, candidates, patch_images=images,
                                    patch_masks=torch.ones(1, dtype=torch.bool))
        by_index = [0.0] * len(candidates)
        for c in ranked:
            by_index[c.index] = c.score
        return by_index

    ours()  # warm-up
    t0 = time.perf_counter()
    mine = ours()
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    base = per_candidate(model, src, images, candidates)
    t_base = time.perf_counter() - t0
    diff = max(abs(a - b) for a, b in zip(mine, base))
    emit({"benchmark": "vqa_allcand", "model": args.model, "image_size": args.image_size,
          "candidates": len(candidates), "vocab": VOCAB,
          "ours_s": round(t_ours, 3), "baseline_per_candidate_s": round(t_base, 3),
          "speedup": round(t_base / t_ours, 2), "max_abs_score_diff": diff,
          "same_best": max(range(len(mine)), key=mine.__getitem__) == max(range(len(base)), key=base.__getitem__),
          "matmul_gflops": _gflops(), "environment": environment()})


if __name__ == "__main__":
    main()
