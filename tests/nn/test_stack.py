"""Tests for ofa.nn.stack.Stack: a typed nn.ModuleList with ModuleList's state-dict keys."""

from __future__ import annotations

import torch
from torch import nn

from ofa.nn.stack import Stack


def test_stack_keeps_module_list_keys_and_order() -> None:
    torch.manual_seed(0)
    tables = [nn.Embedding(3, 2) for _ in range(3)]
    stack: Stack[nn.Embedding] = Stack(tables)
    plain = nn.ModuleList(tables)
    assert isinstance(stack, nn.ModuleList)
    assert list(stack.state_dict()) == list(plain.state_dict()) == ["0.weight", "1.weight", "2.weight"]
    assert [t is u for t, u in zip(stack, tables)] == [True] * 3
    assert stack[1] is tables[1] and stack[-1] is tables[2] and len(stack) == 3
    assert len(Stack()) == 0
