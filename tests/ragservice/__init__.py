"""The reference RAG service the integration and end-to-end tests guard.

An aiohttp app over Postgres (documents, conversation history) and Qdrant (checked and counted through an
alias), configured by environment variables (see settings.py), exposing the metric contract of DESIGN.md.
Run it as `python -m tests.ragservice` from the repository, or as `python -m ragservice` with this folder on
PYTHONPATH's `ragservice` (how the container runs it): the package uses relative imports only.
"""
