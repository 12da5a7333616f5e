"""The embedded model replaced by a tiny checkpoint, through BDS_CACHE (where bds/assets.py
keeps the embedded model's converted folder), so a run on `embedded:...` takes seconds."""

from __future__ import annotations

import pytest

from bds.tiny import save_tiny_checkpoint

EMBEDDED_DIR = "models/smollm2-135m-instruct"


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    save_tiny_checkpoint(cache / EMBEDDED_DIR)
    return cache


@pytest.fixture
def embedded_is_tiny(monkeypatch, tiny_cache):
    monkeypatch.setenv("BDS_CACHE", str(tiny_cache))
