"""Backbone tests use one intra-op thread: their tensors are tiny, and on a shared 2-core machine
a second OpenMP thread spin-waits for a busy core, which made a 10 ms test take seconds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
