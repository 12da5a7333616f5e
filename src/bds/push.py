"""Upload a trained adapter folder (PEFT safetensors + model card) to the Hugging Face hub.

`check_push` runs before any slow work (`bds train --push-to-hub` checks it before
training): an invalid repo id, an offline setting or a missing token is one sentence.
"""

from __future__ import annotations

from pathlib import Path

from bds.errors import BDSInputError
from bds.hub import offline as _offline

UPLOADED = ["adapter_config.json", "*.safetensors", "README.md"]  # never pickles or caches


def check_push(repo_id: str, token: str | None = None, what: str = "--push-to-hub") -> str:
    """The token to upload with; BDSInputError (one sentence) when uploading cannot work."""
    from huggingface_hub import get_token
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise BDSInputError(
            f"{what}: {repo_id!r} is not a hub repo id; give NAME or ORG/NAME (letters, digits, "
            "-, _ and .)"
        ) from None
    if _offline():
        raise BDSInputError(
            f"{what}: HF_HUB_OFFLINE is set, so nothing can be uploaded to {repo_id}; unset it "
            "(and log in with `hf auth login`), or drop the push"
        )
    token = token or get_token()
    if not token:
        raise BDSInputError(
            f"{what}: no hub token to upload {repo_id} with; log in with `hf auth login` or "
            "set HF_TOKEN (a token with write access)"
        )
    return token


def push_adapter(
    adapter_dir: str | Path,
    repo_id: str,
    private: bool = False,
    token: str | None = None,
    what: str = "--push-to-hub",
) -> str:
    """Create `repo_id` (if absent) and upload the adapter folder to it; returns its URL."""
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise BDSInputError(
            f"{what}: {adapter_dir} holds no adapter_config.json; push a trained adapter folder"
        )
    token = check_push(repo_id, token, what)
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(
            folder_path=str(adapter_dir),
            repo_id=repo_id,
            repo_type="model",
            allow_patterns=UPLOADED,
            commit_message="Upload LoRA adapter trained with bds",
        )
    except Exception as exc:  # auth, permissions, network: the hub's first line, as one sentence
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise BDSInputError(
            f"{what}: uploading to {repo_id} failed ({type(exc).__name__}: {first}); check the "
            "token's write access and the connection"
        ) from None
    return str(url)
