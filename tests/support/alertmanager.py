"""config/alertmanager.example.yml made runnable in a test: the rollbackd webhook pointed at a local
URL, the bearer token read from a local file, and (by default) 1 s group timings."""

from __future__ import annotations

from pathlib import Path

import yaml

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "alertmanager.example.yml"


def example_config(webhook_base_url: str, token_file: Path, *, fast: bool = True) -> str:
    config = yaml.safe_load(EXAMPLE.read_text())
    if fast:
        config["route"].update(group_wait="1s", group_interval="1s")
    for receiver in config["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            webhook["url"] = f"{webhook_base_url}/v1/webhook/alertmanager"
            webhook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    return yaml.safe_dump(config, sort_keys=False)
