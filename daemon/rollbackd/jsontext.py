"""JSON text for the storm's hot paths: an encoder's ``encode`` without its per-call set-up.

``JSONEncoder.encode`` builds a new C encoder on every call (about half of what encoding a small
dict costs); a journal row encodes three and a 202 answer one. ``one_shot`` builds it once. The
text is exactly ``encoder.encode``'s; only the circular-reference check is left out, which nothing
encoded here needs (labels, annotations and journal lines are trees made from parsed JSON)."""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable
from typing import Any


def one_shot(encoder: json.JSONEncoder) -> Callable[[Any], str]:
    make: Any = getattr(json.encoder, "c_make_encoder", None)
    if make is None or encoder.indent is not None:  # no C accelerator here: the encoder's own path
        return encoder.encode
    quote = json.encoder.encode_basestring_ascii if encoder.ensure_ascii else json.encoder.encode_basestring
    chunks = make(
        None,  # markers: no circular-reference check
        encoder.default,
        quote,
        None,
        encoder.key_separator,
        encoder.item_separator,
        encoder.sort_keys,
        encoder.skipkeys,
        encoder.allow_nan,
    )

    def encode(value: Any) -> str:
        return "".join(chunks(value, 0))

    return encode
