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


#: whole files of multi-process strategy runs, CLI subprocesses and whole-config fits: marked
#: ``integration`` (single tests elsewhere carry the mark themselves); ``make test-fast`` skips them
INTEGRATION_FILES = {"test_ddp.py", "test_fsdp.py", "test_fp4_ddp.py", "test_fp4_fsdp.py", "test_cli_errors.py",
                     "test_configs.py", "test_gpu_check.py"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in INTEGRATION_FILES:
            item.add_marker(pytest.mark.integration)
