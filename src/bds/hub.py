"""Hub access that fails in seconds: short timeouts, and one probe before a model loads.

Left alone, transformers looks up ~19 files one after another, each retried, before it
reports that the network is down (52 s measured), and waits without end on a server that
accepts and never answers. One lookup with a short timeout answers the same question.
"""

from __future__ import annotations

import os

# Seconds a hub request may take; BDS_HUB_TIMEOUT changes it.
DEFAULT_TIMEOUT_S = 10.0


def hub_timeout() -> float:
    try:
        return float(os.environ.get("BDS_HUB_TIMEOUT", DEFAULT_TIMEOUT_S))
    except ValueError:
        return DEFAULT_TIMEOUT_S


def default_hub_timeouts() -> None:
    """huggingface_hub's own timeouts, unless the user set them (read at its import)."""
    for key in ("HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT"):
        os.environ.setdefault(key, str(int(hub_timeout())))


def offline() -> bool:
    from huggingface_hub import constants  # as the hub library read it at its import

    return bool(constants.HF_HUB_OFFLINE)


def looks_like_local_path(name: str) -> bool:
    """A name that can only be a path (./x, /x, ~/x, a/b/c), never a hub id (name, org/name)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1


def check_hub_model(name: str, revision: str | None, what: str = "model.name") -> None:
    """A hub id is cached or answers one short lookup; otherwise one sentence (BDSInputError)."""
    from bds.errors import BDSInputError

    if offline():
        return  # transformers then fails at once, without the network, if it is not cached
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str):
        return
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    timeout = hub_timeout()
    try:
        HfApi().model_info(name, revision=revision, timeout=timeout)
    except GatedRepoError:
        raise BDSInputError(
            f"{what}: {name} is gated on the hub; accept its licence and log in (hf auth login)"
        ) from None
    except RepositoryNotFoundError:
        raise BDSInputError(
            f"{what}: {name} is not on the hub (or is private); check the id or log in"
        ) from None
    except Exception as exc:  # connection refused, DNS, timeout, proxy: all mean offline here
        from huggingface_hub import constants

        raise BDSInputError(
            f"{what}: cannot reach the hub at {constants.ENDPOINT} within {timeout:g} s to "
            f"fetch {name} ({type(exc).__name__}), and it is not in the local cache; "
            "connect, or give a local model folder"
        ) from None
