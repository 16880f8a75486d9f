"""A small, faithful Qdrant (v1.19 REST API) test server for the endpoints rollbackd uses.

Run it as a separate process with `python -m tests.qdrant_server --port N --storage DIR`, or through
tests.support.qdrant.QdrantTestServer; build the aiohttp application with `create_app`.
"""

from .app import create_app

__all__ = ["create_app"]
