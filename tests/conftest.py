import atexit
import os
import shutil
import tempfile

# No test writes the user's cache (aligned models, converted embedded models): one of its own
# for the session, empty like a fresh machine's, removed at exit. Tests that need another set
# BDS_CACHE themselves.
os.environ["BDS_CACHE"] = tempfile.mkdtemp(prefix="bds-test-cache-")
atexit.register(shutil.rmtree, os.environ["BDS_CACHE"], ignore_errors=True)

# Every test runs offline: a hub call must fail fast, not retry for a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from bds.data.schema import Record  # noqa: E402


def make_records(n: int, source: str, prefix: str | None = None) -> list[Record]:
    prefix = prefix or source
    return [
        Record(
            id=f"{prefix}/{i}",
            instruction=f"{prefix} question {i}",
            response=f"answer {i}",
            source=source,
        )
        for i in range(n)
    ]


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from bds.tiny import build_tiny_tokenizer

    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core machine OpenMP threads
    waiting on each other make every small matmul ~100x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
