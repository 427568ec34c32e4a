"""Prefix tree over candidate answers, for constrained decoding and training masks (VQA, classification)."""

from __future__ import annotations

from typing import Iterable, Sequence

from ofa.errors import GenerationError
from ofa.tokenization.vocab import BOS_ID, EOS_ID

__all__ = ["Trie"]


class Trie:
    """Token trie; each answer is inserted as ``[bos] + answer_ids + [eos]`` (as OFA does).

    Args:
        sequences: token-id sequences to insert (already wrapped with bos/eos by :meth:`from_answers`).
        eos_id: returned by :meth:`next_tokens` for a prefix that has left the trie.
    """

    def __init__(self, sequences: Iterable[Sequence[int]] = (), eos_id: int = EOS_ID) -> None:
        self.eos_id = eos_id
        self._root: dict[int, dict] = {}
        self.size = 0
        for seq in sequences:
            self.insert(seq)

    @classmethod
    def from_answers(cls, answers: Iterable[Sequence[int]], bos_id: int = BOS_ID, eos_id: int = EOS_ID) -> "Trie":
        """Build from answer token lists (without bos/eos). An empty list of answers raises."""
        rows = [list(a) for a in answers]
        if not rows:
            raise GenerationError("the candidate answer list is empty")
        for a in rows:
            if not a:
                raise GenerationError("a candidate answer encodes to no tokens")
        return cls(([bos_id, *a, eos_id] for a in rows), eos_id=eos_id)

    def insert(self, sequence: Sequence[int]) -> None:
        node = self._root
        for token in sequence:
            node = node.setdefault(int(token), {})
        self.size += 1

    def next_tokens(self, prefix: Sequence[int]) -> list[int]:
        """Allowed next tokens after ``prefix`` (starting with bos), or ``[eos]`` if the prefix left the trie."""
        node = self._root
        for token in prefix:
            child = node.get(int(token))
            if child is None:
                return [self.eos_id]
            node = child
        return list(node)

    def __len__(self) -> int:
        return self.size
