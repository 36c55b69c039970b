"""Shared test fixtures: one thread per test process keeps the 2-core CI machine predictable."""

import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("LIT_REASON_TEST_THREADS", "1")))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def tiny_policy():
    from lit_reason.models.policy import load_policy

    torch.manual_seed(0)
    return load_policy("tiny")
