"""Configuration from the environment (the container's operator settings)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    port: int = 8000
    host: str = "127.0.0.1"
    version: str = "dev"
    mode: str = "good"  # good | bad
    pg_dsn: str = ""
    qdrant_url: str = ""  # empty: no Qdrant (healthz says "disabled")
    qdrant_collection: str = "docs"  # the alias the service reads through
    qdrant_api_key: str = ""
    self_traffic_rps: float = 0.0
    ragas_window: int = 100
    sources_file: str = ""  # governance sources file (YAML); empty: no governance check
    provider: str = "llm-sim"
    provider_latency_s: float = 0.0  # what the simulated LLM takes per answer (a real one takes 0.5-2 s)
    record_conversations: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        mode = e.get("RAG_MODE", "good")
        if mode not in ("good", "bad"):
            raise SystemExit(f"RAG_MODE must be good or bad, not {mode!r}")
        return cls(
            port=int(e.get("RAG_PORT", "8000")),
            host=e.get("RAG_HOST", "127.0.0.1"),
            version=e.get("RAG_VERSION", "dev"),
            mode=mode,
            pg_dsn=e.get("RAG_PG_DSN", ""),
            qdrant_url=e.get("RAG_QDRANT_URL", "").rstrip("/"),
            qdrant_collection=e.get("RAG_QDRANT_COLLECTION", "docs"),
            qdrant_api_key=e.get("RAG_QDRANT_API_KEY", ""),
            self_traffic_rps=float(e.get("RAG_SELF_TRAFFIC_RPS", "0") or 0),
            ragas_window=int(e.get("RAG_RAGAS_WINDOW", "100")),
            sources_file=e.get("RAG_SOURCES_FILE", ""),
            provider=e.get("RAG_PROVIDER", "llm-sim"),
            provider_latency_s=float(e.get("RAG_PROVIDER_LATENCY", "0") or 0),
            record_conversations=e.get("RAG_RECORD_CONVERSATIONS", "1") not in ("0", "false", "no"),
        )
