"""``Stack[M]``: an ``nn.ModuleList`` whose items have one known type, so code that iterates or indexes it is
type-checked against that type (an ``nn.ModuleList`` only promises ``nn.Module``). State-dict keys are those of
an ``nn.ModuleList`` (``layers.0.…``)."""

from __future__ import annotations

from typing import Generic, Iterable, Iterator, TypeVar, cast

from torch import nn

__all__ = ["Stack"]

M = TypeVar("M", bound=nn.Module)


class Stack(nn.ModuleList, Generic[M]):
    """A list of sub-modules of type ``M`` (e.g. ``Stack[nn.Embedding]``)."""

    def __init__(self, modules: Iterable[M] = ()) -> None:
        super().__init__(modules)

    def __iter__(self) -> Iterator[M]:
        return cast(Iterator[M], super().__iter__())

    def __getitem__(self, index: int) -> M:  # type: ignore[override]  # slices are not used on a stack
        return cast(M, super().__getitem__(index))
