"""Find timm pretrained weights on disk (HF hub cache, torch hub cache) or download them, fast.

huggingface_hub retries an unreachable hub for ~25 s per file before giving up, and timm would
then try a second file name. We look in the caches first, probe the hub host once with a short
timeout, and fail with one line naming the two ways out (``pretrained=false`` or ``checkpoint``).
Never a silent fallback to random weights.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

from featlab.errors import ConfigError

HF_FILES = ("model.safetensors", "pytorch_model.bin")
PROBE_TIMEOUT_S = 3.0
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def pretrained_file(timm_name: str, backbone: str, key: str = "backbone") -> str:
    """Local path of the weights timm's ``timm_name`` (``arch.tag``) refers to, downloading if possible."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(timm_name)
    if cfg is None:
        raise ConfigError(
            f"{key}.pretrained",
            f"timm has no pretrained tag '{timm_name}' for {backbone}; "
            "set pretrained=false (random init) or checkpoint=<local file>",
        )
    repo, url = cfg.hf_hub_id, cfg.url
    names = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HF_FILES
    found = cached_weight_file(repo, names, url)
    if found:
        return found
    reason = "the Hugging Face hub is unreachable"
    if repo and hub_reachable():
        try:
            return _download(repo, names)
        except Exception as err:  # any hub/network failure becomes the same actionable message
            reason = f"download failed ({type(err).__name__}: {str(err).splitlines()[0][:120]})"
    where = f"hf hub '{repo}'" if repo else url
    raise ConfigError(
        f"{key}.pretrained",
        f"no weights for {backbone} ({timm_name}) in the local caches and {reason} ({where}); "
        "set pretrained=false for random init, or checkpoint=<path to a local weight file>",
    )


def cached_weight_file(repo: str | None, names: tuple[str, ...], url: str | None) -> str | None:
    """A weight file already on disk: HF hub cache first, then torch.hub's checkpoints folder."""
    if repo:
        from huggingface_hub import try_to_load_from_cache

        for name in names:
            hit = try_to_load_from_cache(repo, name)
            if isinstance(hit, str) and os.path.isfile(hit):
                return hit
    if url:
        import torch.hub

        candidate = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
        if candidate.is_file():
            return str(candidate)
    return None


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """False when offline mode is set or the hub host does not answer within ``timeout`` seconds."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    if any(os.environ.get(v) for v in _PROXY_VARS):
        return True  # a direct probe says nothing about a proxy; let the download decide
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)  # getaddrinfo ignores socket timeouts
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _download(repo: str, names: tuple[str, ...]) -> str:
    from huggingface_hub import hf_hub_download

    error: Exception | None = None
    for name in names:
        try:
            return hf_hub_download(repo, name)
        except Exception as err:  # try the next file name (safetensors first, then the pickle)
            error = err
    assert error is not None
    raise error
