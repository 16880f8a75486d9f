"""Where a distinct alert's time goes: the real app (create_app over build_core, SQLite journal) served
in this process, with one more part of the path taken away per rung, each rung measured with wrk in
the `distinct` mode against the bare aiohttp handler run just before it:

  full              the daemon's path (as `rollbackd serve`, GC settled as heap.settle does)
  store-no-sql      the journal's thread round trip kept, its SQL taken away
  no-store          the journal write answered at once (rows still built)
  no-intake         decisions made up (no policy, no journal): parse and answer only
  no-parse          a parsed body reused: the webhook handler and the middleware only
  aiohttp+mw        a handler that reads the body and answers, behind the API middleware

A rung's ratio is the ceiling the parts left in it allow: when even `no-store` misses a goal, no work
on the journal reaches it. Stand-ins live here, never in the daemon.

    .venv/bin/python bench/webhook_storm/run.py --ladder [--seconds 6] [--repeat 3]
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RUNGS = ("full", "store-no-sql", "no-store", "no-intake", "no-parse", "aiohttp+mw")


async def _serve(rung: str, port: int, work: Path) -> None:
    from aiohttp import web

    from bench.webhook_storm import run
    from rollbackd import heap
    from rollbackd.api.app import api_middleware, create_app
    from rollbackd.wiring import build_core
    from tests.support.daemon import load_settings, write_config

    cfg = write_config(work, services=run.services(), state={"type": "sqlite", "path": str(work / "state.db")})
    core = build_core(load_settings(cfg))
    await core.start()
    _take_away(rung, core)
    app = create_app(core)
    if rung == "aiohttp+mw":

        async def read_and_answer(request: web.Request) -> web.Response:
            await request.read()
            return web.Response(status=200)

        app = web.Application(middlewares=[api_middleware])
        app.router.add_post("/v1/webhook/alertmanager", read_and_answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    heap.settle()
    print("ready", flush=True)
    await asyncio.Event().wait()


def _take_away(rung: str, core: Any) -> None:
    """Replace the parts this rung goes without by stand-ins that answer at once."""
    import rollbackd.api.webhook as webhook
    from bench.webhook_storm import run
    from rollbackd.alertmanager import parse_webhook
    from rollbackd.reasons import Action, Reason
    from rollbackd.records import Decision

    store = core.store

    def inserted(first: Any) -> list[dict[str, Any]]:  # every alert row new (a row has 12 arguments, key first)
        return [{"key": args[i]} for _, args in first for i in range(0, len(args), 12)]

    if rung == "store-no-sql":

        async def thread_only(first: Any, then: Any) -> list[dict[str, Any]]:
            return list(await store._run(inserted, first))

        store._atomic_then = thread_only
    if rung == "no-store":

        async def at_once(first: Any, then: Any) -> list[dict[str, Any]]:
            return inserted(first)

        store._atomic_then = at_once
    if rung in ("no-intake", "no-parse"):
        made_up = Decision(Action.NOTIFY, Reason.NOTIFY_RULE, "rag")

        async def receive(alerts: Any, received_at: float) -> list[Decision]:
            return [made_up for _ in alerts]

        core.intake.receive = receive  # type: ignore[method-assign]
    if rung == "no-parse":
        parsed = parse_webhook(run.MODES["identical"].encode())
        webhook.parse_webhook = lambda body: parsed  # type: ignore[assignment]


def main(seconds: int, connections: int, repeat: int = 1) -> None:
    from bench.webhook_storm import load, run

    work = Path(tempfile.mkdtemp(prefix="ladder-"))
    print(
        f"distinct alerts, in-process app, {seconds}s per rung x {connections} connections, wrk -t2, "
        f"{repeat} run(s) per rung (the row: the run of median ratio)",
        flush=True,
    )
    opts: dict[str, Any] = {"services": run.SERVICES, "seconds": seconds, "connections": connections, "workdir": work}
    for rung in RUNGS:
        (base, got), spread = load.by_median([_side_by_side(rung, rep, work, opts) for rep in range(repeat)])
        print(
            f"  {rung:13s} bare {base.rps:7.0f} req/s  app {got.rps:7.0f} req/s  ratio {load.ratio((base, got)):5.2f}"
            f"{spread}  "
            f"{1e6 / got.rps:6.1f} us/req  p99 {got.p99_ms:6.2f} ms  errors {got.errors}",
            flush=True,
        )


def _side_by_side(rung: str, rep: int, work: Path, opts: dict[str, Any]) -> Any:
    """The bare handler's result, then this rung's, run just after it (a load.Pair)."""
    from bench.webhook_storm import load, run
    from rollbackd.ports import free_port

    tag = f"la{rung[:3]}{rep}{int(time.time() * 1000) % 10**8}"
    with run.bare_handler() as bare:
        base = load.wrk(bare, run.MODES["distinct"], run=tag + "b", **opts)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, rung, str(port), str(work / f"{rung}-{rep}")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        got = load.wrk(f"http://127.0.0.1:{port}", run.MODES["distinct"], run=tag, **opts)
    finally:
        proc.terminate()
        proc.wait()
    return base, got


if __name__ == "__main__":
    repo = Path(__file__).resolve().parents[2]
    sys.path[:0] = [str(repo), str(repo / "daemon")]
    rung_name, port_text, workdir = sys.argv[1:4]
    Path(workdir).mkdir(parents=True, exist_ok=True)
    asyncio.run(_serve(rung_name, int(port_text), Path(workdir)))
