"""Tests for the pretrain task and criterion: the examples of §5.7 built from the world's pretraining files, the
detection target layout, the v1/v2 loss normalisation against a hand computation, and a 3-step pretraining run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import ofa
from ofa.data.collate import PartedBatch, collate_parts
from ofa.data.dataset import TaskDataset
from ofa.data.tsv import TSVFile
from ofa.errors import ConfigError, DataError
from ofa.pretraining.examples import INSTRUCTIONS, TEXT_INFILLING, V1, V2
from ofa.pretraining.task import PretrainTask
from ofa.trainer import Trainer, TrainerConfig
from ofa.trainer.criteria import CriterionContext
from ofa.trainer.criteria.ce import LabelSmoothedCE
from ofa.trainer.criteria.pretrain import PretrainLoss


def _dataset(tok: Any, pretrain_files: dict[str, Path], task_options: dict[str, Any]) -> TaskDataset:
    task = ofa.get_task("pretrain", **task_options)
    return TaskDataset(TSVFile(pretrain_files["vision_language"]), task, tok, training=True)


def _kinds(samples: list[Any]) -> list[str]:
    return [s.meta["kind"] for s in samples]


def test_registered_and_rows_give_the_examples_of_the_recipe(tok: Any, pretrain_files: dict[str, Path],
                                                            task_options: dict[str, Any]) -> None:
    assert isinstance(ofa.get_task("pretrain", **task_options), PretrainTask)
    data = _dataset(tok, pretrain_files, task_options)
    first = data[0]  # a caption row, and row 0 carries the second-pass samples
    assert isinstance(first, list)
    assert _kinds(first) == ["caption", "itm", "text_infilling", "text_infilling", "image_infilling", "detection"]
    assert [s.part for s in first] == [V1, V1, V2, V2, V2, V2]
    assert [s.weight for s in first] == [1.0, 1.0, 2.0, 2.0, 2.0, 2.0]
    caption, itm = first[:2]
    assert tok.decode(caption.source).strip() == INSTRUCTIONS["caption"].strip()
    assert tok.decode(itm.target).strip() in ("yes", "no") and tok.decode(itm.source).strip().startswith("does the image describe")
    assert caption.image.shape == (3, 32, 32) and caption.patch_mask
    text = first[2]
    assert not text.patch_mask and torch.equal(text.image, torch.zeros(3, 32, 32))
    before, after = (tok.encode(t) for t in TEXT_INFILLING)
    assert text.source[1:1 + len(before)] == before and text.source[-1 - len(after):-1] == after
    assert tok.vocab.mask_id in text.source
    image = first[4]
    assert image.code_mask and len(image.target) == 64 + 1
    assert all(tok.vocab.kind(t) == ofa.tokenization.vocab.TokenKind.CODE for t in image.target[:-1])
    kinds = {k for i in range(1, 8) for k in _kinds(data[i])}
    assert {"vqa", "vqa_match", "grounding", "grounded_caption"} <= kinds
    assert all(s.part == V1 for i in range(1, 8) for s in data[i])  # extras only every 8th row


def test_detection_target_is_four_bins_then_the_name_per_object(tok: Any, pretrain_files: dict[str, Path],
                                                               task_options: dict[str, Any]) -> None:
    data = _dataset(tok, pretrain_files, task_options)
    detection = [s for s in data[0] if s.meta["kind"] == "detection"][0]
    ids = detection.target[:-1]
    names = {o.split(",")[5] for o in pretrain_files["detection"].read_text().splitlines()[0].split("\t")[2]
             .split("&&")}
    bin_kind = ofa.tokenization.vocab.TokenKind.BIN
    objects, i = [], 0
    while i < len(ids):
        assert all(tok.vocab.kind(t) == bin_kind for t in ids[i:i + 4])
        x0, y0, x1, y1 = (tok.vocab.bin_index(t) for t in ids[i:i + 4])
        assert x0 <= x1 and y0 <= y1
        j = i + 4
        while j < len(ids) and tok.vocab.kind(ids[j]) != bin_kind:
            j += 1
        objects.append(tok.decode(ids[i + 4:j]).strip())
        i = j
    assert objects and set(objects) <= names
    assert tok.decode(detection.source).strip() == INSTRUCTIONS["detection"].strip()


def test_grounded_caption_reads_the_grounding_bins(tok: Any, pretrain_files: dict[str, Path],
                                                   task_options: dict[str, Any]) -> None:
    data = _dataset(tok, pretrain_files, task_options)
    for i in range(len(data)):
        group = data[i]
        if _kinds(group) == ["grounding", "grounded_caption"]:
            grounding, region = group
            bins = grounding.target[:-1]
            assert len(bins) == 4 and region.source[-5:-1] == bins
            assert torch.equal(grounding.image, region.image)
            return
    pytest.fail("no grounding row")


def test_loss_is_the_sum_of_per_pass_token_means(tok: Any, pretrain_files: dict[str, Path],
                                                 task_options: dict[str, Any]) -> None:
    """loss = loss_v1 / ntok_v1 + loss_v2 / ntok_v2 with weights, checked by hand (no smoothing)."""
    torch.manual_seed(0)
    model = ofa.build_model("ofa-test", vocab_size=len(tok), code_image_size=64).eval()
    data = _dataset(tok, pretrain_files, task_options)
    batch = collate_parts([data[0], data[1]], pad_id=tok.pad_id)
    assert isinstance(batch, PartedBatch) and len(batch.parts) == 2 and len(batch) == 4 + 4
    context = CriterionContext(tokenizer=tok, tasks=[data.task], datasets=[data], model=model,
                               device=torch.device("cpu"), full_model=None, train_mode=lambda: None)  # type: ignore[arg-type]
    criterion = PretrainLoss(PretrainLoss.Config(sample_patch_num=3), context)
    prepared = criterion.prepare(batch, 0, 0)
    assert prepared.ntokens == 1
    torch.manual_seed(5)
    out = criterion.loss(model, prepared)
    torch.manual_seed(5)
    with torch.no_grad():
        expected = _hand_loss(model, batch, tok)
    assert float(out.loss) == pytest.approx(expected, rel=1e-5)
    assert out.ntokens == 1


def _hand_loss(model: Any, batch: PartedBatch, tok: Any) -> float:
    expected = 0.0
    for index, part in enumerate(batch.parts):
        assert part is not None
        codes = part.code_masks if bool(part.code_masks.any()) else None
        logits = model(part.src_tokens, part.prev_output_tokens, part.patch_images, part.patch_masks, codes,
                       sample_patch_num=3 if index == 0 else None).logits
        lp = torch.log_softmax(logits.float(), dim=-1) * part.weights[:, None, None]
        keep = part.target.ne(tok.pad_id)
        nll = -lp.gather(-1, part.target[..., None])[..., 0][keep]
        expected += float(nll.sum()) / int(keep.sum())
    return expected


def test_single_pass_criteria_refuse_parted_batches(tok: Any, pretrain_files: dict[str, Path],
                                                    task_options: dict[str, Any]) -> None:
    data = _dataset(tok, pretrain_files, task_options)
    batch = collate_parts([data[0]], pad_id=tok.pad_id)
    context = CriterionContext(tokenizer=tok, tasks=[data.task], datasets=[data], model=None,  # type: ignore[arg-type]
                               device=torch.device("cpu"), full_model=None, train_mode=lambda: None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="use criterion 'pretrain'"):
        LabelSmoothedCE(LabelSmoothedCE.Config(), context).prepare(batch, 0, 0)
    with pytest.raises(DataError, match="need collate_parts"):
        ofa.data.collate.collate(data[0], pad_id=tok.pad_id)


def test_missing_negatives_name_what_is_needed(tok: Any, pretrain_files: dict[str, Path],
                                               task_options: dict[str, Any]) -> None:
    options = {**task_options, "negatives": None}
    data = _dataset(tok, pretrain_files, options)
    data.max_bad_rows = 0
    with pytest.raises(DataError, match="negative-sample resources"):
        data[0]


def test_three_pretraining_steps(tok: Any, pretrain_files: dict[str, Path], task_options: dict[str, Any],
                                 tmp_path: Path) -> None:
    tok.save_pretrained(tmp_path / "tok")
    config = TrainerConfig.from_dict(dict(
        output_dir=str(tmp_path / "run"), model="ofa-test", model_overrides={"code_image_size": 64},
        tokenizer=str(tmp_path / "tok"), task="pretrain", task_options=task_options,
        train_data=str(pretrain_files["vision_language"]), micro_batch_size=4, grad_accum=2, max_steps=3,
        criterion={"name": "pretrain", "sample_patch_num": 2}, clip_norm=5.0, device="cpu", log_every=1, seed=0,
        lr=1e-3, warmup_steps=0))
    trainer = Trainer(config, progress=False)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())]
    assert any(n.startswith("encoder.embed_images") for n in changed)  # v1 images trained
    assert any("code_layernorm_embedding" in n for n in changed)  # image-infilling codes trained
