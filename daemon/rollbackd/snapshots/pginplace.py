"""In-place mode (``in_place_tables``): only the chosen tables (the corpus) go back to the snapshot; the
others (conversation history) keep what users wrote. The snapshot was restored aside as usual; the swap
copies the chosen tables' rows from that copy into the live database in ONE transaction (TRUNCATE, COPY,
sequences set), so readers see the old rows or the new ones, and the live database keeps its OID,
properties, replication slots and subscriptions. The aside copy is dropped afterwards."""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rollbackd.errors import FatalError
from rollbackd.records import JSON
from rollbackd.snapshots.pgtools import ident

if TYPE_CHECKING:
    from rollbackd.snapshots.postgres import PostgresSnapshotter

_SEQUENCES_SQL = """
SELECT s.relname AS seq, n.nspname AS schema FROM pg_depend d
JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
JOIN pg_namespace n ON n.oid = s.relnamespace
WHERE d.refobjid = $1::regclass AND d.deptype IN ('a', 'i')"""


def qualified(table: str) -> tuple[str, str]:
    schema, _, name = table.rpartition(".")
    return schema or "public", name


async def swap_in_place(snap: PostgresSnapshotter, restored: JSON) -> JSON:
    tables = [qualified(t) for t in snap.options.in_place_tables or []]
    copy = restored["database"]
    with tempfile.TemporaryDirectory(prefix="rollbackd-inplace-") as tmp:
        async with snap.plain(copy) as src, snap.bounded(what="the in-place swap") as live:
            spooled: list[tuple[str, str, list[str], Path]] = []
            sequences: list[tuple[str, int, bool]] = []
            for schema, name in tables:
                cols = [
                    r["attname"]
                    for r in await src.fetch(
                        "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 "
                        "AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
                        f"{ident(schema)}.{ident(name)}",
                    )
                ]
                if not cols:
                    raise FatalError(f"in_place_tables: {schema}.{name} is not in the snapshot")
                path = Path(tmp) / f"{len(spooled)}.copy"
                await src.copy_from_table(name, schema_name=schema, columns=cols, output=str(path), format="binary")
                spooled.append((schema, name, cols, path))
                sequences += await _sequences(src, schema, name)
            started = time.monotonic()
            async with live.transaction():
                names = ", ".join(f"{ident(s)}.{ident(n)}" for s, n, _, _ in spooled)
                await live.execute(f"LOCK TABLE {names} IN ACCESS EXCLUSIVE MODE")
                await live.execute(f"TRUNCATE {names}")
                for schema, name, cols, path in spooled:
                    await live.copy_to_table(name, schema_name=schema, columns=cols, source=str(path), format="binary")
                for seq, value, called in sequences:
                    await live.execute("SELECT setval($1::regclass, $2, $3)", seq, value, called)
                counts = {
                    f"{s}.{n}": int(await live.fetchval(f"SELECT count(*) FROM {ident(s)}.{ident(n)}"))
                    for s, n, _, _ in spooled
                }
                expected = restored["expected"]["tables"]
                wrong = [t for t, c in counts.items() if t in expected and expected[t]["rows"] != c]
                if wrong:
                    raise FatalError(f"in-place restore counts differ for {', '.join(wrong)}; rolled back")
            window = time.monotonic() - started
            await live.execute(f"ANALYZE {names}")
    await snap.discard(restored)
    return {
        "kind": snap.kind,
        "mode": "in_place",
        "live": snap.database,
        "tables": counts,
        "downtime_s": round(window, 4),
        "kept": None,
        "note": "tables locked (not the database) during the window",
    }


async def _sequences(src: Any, schema: str, name: str) -> list[tuple[str, int, bool]]:
    out: list[tuple[str, int, bool]] = []
    for row in await src.fetch(_SEQUENCES_SQL, f"{ident(schema)}.{ident(name)}"):
        qual = f"{ident(row['schema'])}.{ident(row['seq'])}"
        with contextlib.suppress(Exception):
            state = await src.fetchrow(f"SELECT last_value, is_called FROM {qual}")
            out.append((qual, int(state["last_value"]), bool(state["is_called"])))
    return out
