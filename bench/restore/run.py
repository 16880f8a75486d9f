"""Data rollback benchmark: rollbackd's restore-aside-then-swap against the plain tools, side by side, in one run.

    .venv/bin/python bench/restore/run.py [--mb 250] [--rounds 2]

On a fresh database of at least 250 MB (tests.support.corpus.generate_large) on the PostgreSQL server of the
test machine (ROLLBACKD_TEST_PG_ADMIN_DSN), it prints:
  (a) the window a client sees  vs  restoring in place (`pg_restore --clean` into the live database, during
      which the service has no consistent data), both measured from OUTSIDE by a client that reconnects to
      the live database every 20 ms and reads the data (as bench/revert's poller does over HTTP): the window
      is the longest gap between two answers with the snapshot's data, minus the interval; rollbackd's own
      figure is printed beside it                                   goal: ratio <= 0.05
  (b) rollbackd prepare + swap wall time (re-hash, restore, row-count check, ANALYZE, properties, rename)
      vs  raw `pg_restore -j2` of the same dump into a new database (CREATE DATABASE included on both sides)
                                                                   goal: ratio <= 1.10
  (c) rollbackd snapshot creation  vs  raw `pg_dump -Fd -j2`       goal: ratio <= 1.10
Each pair is measured `rounds` times, alternating, and the best of each side is compared. Every database and
directory it makes is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "daemon"), str(ROOT)]

from rollbackd.snapshots.dataset import DataSet  # noqa: E402
from rollbackd.snapshots.pgtools import Dsn  # noqa: E402
from rollbackd.snapshots.postgres import DUMP_DIR, PostgresOptions, PostgresSnapshotter  # noqa: E402
from rollbackd.snapshots.store import SnapshotStore  # noqa: E402
from tests.support.corpus import generate_large  # noqa: E402
from tests.support.pg import admin_connect, drop_database, dsn_for, fresh_database  # noqa: E402
from tests.support.poller import Poller  # noqa: E402

PROBE = "SELECT count(*), max(id) FROM chunks WHERE id > (SELECT max(id) - 1000 FROM chunks)"


class PgPoller(Poller):
    """The reconnecting client: every 20 ms a new connection to the live database reads the newest rows; an
    answer counts only when it is the snapshot's (``expected``), so a half-restored table is a gap too."""

    def __init__(self, dsn: str, expected: tuple[int, int]) -> None:
        super().__init__(0)
        self.dsn, self.expected = dsn, expected

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            while not self.stop.is_set():
                if loop.run_until_complete(self._probe()):
                    self.ok_at.append(time.monotonic())
                else:
                    self.failures += 1
                time.sleep(self.INTERVAL)
        finally:
            loop.close()

    async def _probe(self) -> bool:
        import asyncpg

        try:
            conn = await asyncpg.connect(self.dsn, timeout=0.3)
            try:
                row = await conn.fetchrow(PROBE, timeout=2)
            finally:
                await conn.close()
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        return row is not None and row[1] is not None and (int(row[0]), int(row[1])) == self.expected


async def expected_rows(dsn: str) -> tuple[int, int]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(PROBE)
        return int(row[0]), int(row[1])
    finally:
        await conn.close()


def run(argv: list[str], dsn: Dsn) -> float:
    started = time.monotonic()
    subprocess.run(argv, check=True, env=dsn.env(), stdout=subprocess.DEVNULL)
    return time.monotonic() - started


async def create_db(name: str) -> None:
    conn = await admin_connect()
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    finally:
        await conn.close()


def line(label: str, ours: float, theirs: float, goal: float) -> str:
    ratio = ours / theirs if theirs else float("inf")
    verdict = "MET" if ratio <= goal else "MISSED"
    return f"{label:<58} {ours:9.3f}s vs {theirs:9.3f}s  ratio {ratio:6.3f}  goal <= {goal:<5} {verdict}"


async def bench(mb: int, rounds: int) -> None:
    live_dsn = await fresh_database("bench_restore")
    work = Path(tempfile.mkdtemp(prefix="rollbackd-bench-"))
    dsn = Dsn.parse(live_dsn)
    try:
        t0 = time.monotonic()
        size = await generate_large(live_dsn, mb)
        print(f"database {dsn.database}: {size / 2**20:.0f} MB generated in {time.monotonic() - t0:.1f}s")
        snap = PostgresSnapshotter(PostgresOptions(dsn=live_dsn, jobs=2))  # type: ignore[arg-type]
        data = DataSet(service="bench", store=SnapshotStore(work / "store", "bench"), snapshotters={"postgres": snap})
        pg_dump, pg_restore = shutil.which("pg_dump") or "pg_dump", shutil.which("pg_restore") or "pg_restore"

        # (c) snapshot creation vs raw pg_dump
        ours_c, raw_c, set_id = [], [], ""
        for i in range(rounds):
            target = work / f"raw-dump-{i}"
            raw_c.append(run([pg_dump, "-Fd", "-j", "2", "-f", str(target), *dsn.argv(dsn.database)], dsn))
            shutil.rmtree(target)
            started = time.monotonic()
            made = await data.create(reason="bench")
            ours_c.append(time.monotonic() - started)
            if set_id:
                data.store.delete(set_id)
            set_id = made.id
        made = await data.get(set_id)
        assert made.path is not None
        dump_dir = made.path / "postgres" / DUMP_DIR

        # (b) prepare + swap vs raw pg_restore -j2 into a new database; (a) swap window seen from outside
        expected = await expected_rows(live_dsn)
        ours_b, raw_b, downtime, seen_ours, vacuum = [], [], [], [], []
        for i in range(rounds):
            scratch = f"{dsn.database}__raw{i}"
            started = time.monotonic()  # a restore into a new database includes making it (rollbackd does too)
            await create_db(scratch)
            raw_b.append(
                time.monotonic() - started + run([pg_restore, "-j", "2", *dsn.argv(scratch), str(dump_dir)], dsn)
            )
            await drop_database(scratch, related=False)
            started = time.monotonic()
            prepared = await data.prepare(set_id)
            took = time.monotonic() - started
            with PgPoller(live_dsn, expected) as client:  # its warm-up and wind-down are not rollbackd's
                started = time.monotonic()
                swapped = await data.swap(prepared, f"bench{i}")
                took += time.monotonic() - started
            ours_b.append(took)
            seen_ours.append(client.unavailable)
            vacuum.append(float(prepared["postgres"]["durations"]["vacuum_analyze_s"]))
            downtime.append(float(swapped["postgres"]["downtime_s"]))
            await drop_database(swapped["postgres"]["kept"], related=False)

        # (a) the in-place restore: the live database is being replaced for the whole pg_restore --clean
        in_place, seen_in_place = [], []
        for _ in range(rounds):
            with PgPoller(live_dsn, expected) as client:
                in_place.append(
                    run([pg_restore, "--clean", "--if-exists", "-j", "2", *dsn.argv(dsn.database), str(dump_dir)], dsn)
                )
            seen_in_place.append(client.unavailable)
        print(
            f"dump: {sum(f.stat().st_size for f in dump_dir.iterdir()) / 2**20:.0f} MB, rounds: {rounds}, "
            f"swap windows rollbackd measured: {', '.join(f'{d * 1000:.1f} ms' for d in downtime)}; seen by "
            f"the client: {', '.join(f'{d * 1000:.1f} ms' for d in seen_ours)}; in-place pg_restore took "
            f"{', '.join(f'{d:.2f} s' for d in in_place)}"
        )
        print(line("(a) swap window vs in-place pg_restore --clean (client)", min(seen_ours), min(seen_in_place), 0.05))
        print(line("(b) prepare+swap vs raw pg_restore -j2", min(ours_b), min(raw_b), 1.10))
        print(
            line(
                "(b') the same without VACUUM (ANALYZE) (the copy's visibility map)",
                min(o - v for o, v in zip(ours_b, vacuum, strict=True)),
                min(raw_b),
                1.10,
            )
        )
        print(line("(c) snapshot create vs raw pg_dump -Fd -j2", min(ours_c), min(raw_c), 1.10))
        await data.close()
    finally:
        await drop_database(live_dsn)
        for i in range(rounds):
            await drop_database(dsn_for(f"{dsn.database}__raw{i}"), related=False)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=int(os.environ.get("BENCH_MB", "250")))
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(bench(args.mb, args.rounds))


if __name__ == "__main__":
    main()
