"""The daemon's HTTP API (aiohttp): the Alertmanager webhook, /v1 for the CLI, health and metrics."""
