"""Errors of the Qdrant test server, worded and coded as Qdrant's REST API answers them.

Qdrant (src/actix/helpers.rs, lib/storage/src/content_manager/errors.rs) maps its StorageError variants
to HTTP codes and prefixes the message with the variant's label; the helpers below reproduce both.
"""

from __future__ import annotations


class QdrantError(Exception):
    """An error answered as `{"status": {"error": message}, "time": ...}` with `status` as HTTP code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bad_input(description: str) -> QdrantError:
    return QdrantError(400, f"Wrong input: {description}")


def already_exists(description: str) -> QdrantError:
    return QdrantError(409, f"Wrong input: {description}")


def not_found(description: str) -> QdrantError:
    return QdrantError(404, f"Not found: {description}")


def bad_request(description: str) -> QdrantError:
    return QdrantError(400, f"Bad request: {description}")


def forbidden(description: str) -> QdrantError:
    return QdrantError(403, f"Forbidden: {description}")


def service_error(description: str) -> QdrantError:
    return QdrantError(500, f"Service internal error: {description}")


def checksum_mismatch(expected: str, actual: str) -> QdrantError:
    return QdrantError(400, f"Checksum mismatch: expected {expected}, actual {actual}")


def collection_missing(name: str) -> QdrantError:
    return not_found(f"Collection `{name}` doesn't exist!")


def format_error(where: str, detail: str) -> QdrantError:
    """A body or query that does not deserialize (actix-web-validator's Deserialize/JsonPayload errors)."""
    if where == "JSON body":
        return QdrantError(400, f"Format error in JSON body: {detail}")
    return QdrantError(400, f"Deserialize error in {where}: {detail}")


def validation_error(where: str, field: str, detail: str) -> QdrantError:
    """A value that deserializes but fails validation (Qdrant answers 422 for these)."""
    return QdrantError(422, f"Validation error in {where}: [{field}: {detail}]")
