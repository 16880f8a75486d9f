"""Load for the webhook storm: wrk on loopback with a Lua script that builds each request's body from a
template, so a mode can send the very same bytes, the same alert in other bytes, or a distinct alert (and
service) per request. ``@@TAG@@`` in the template becomes a tag unique to the request, ``@@SVC@@`` one of
``services`` service names (svc0..svcN-1), in turn."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.daemon import WEBHOOK_TOKEN

LUA = """
wrk.method = "POST"
wrk.path = "/v1/webhook/alertmanager"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
local counter = 0
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function request()
  counter = counter + 1
  local tag = string.format("{run}t%dn%09d", tid, counter)
  local svc = "svc" .. ((counter * 7 + tid) % {services})
  return wrk.format(nil, nil, nil, {body})
end
"""


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers and socket errors


Pair = tuple[Result, Result]  # the bare handler's run, then the app's, run just after it


def ratio(pair: Pair) -> float:
    return pair[1].rps / pair[0].rps


def by_median(pairs: list[Pair]) -> tuple[Pair, str]:
    """The pair of median ratio (of an even count, the lower) and, of more than one, the ratios' range."""
    ranked = sorted(pairs, key=ratio)
    spread = f" ({ratio(ranked[0]):.2f}-{ratio(ranked[-1]):.2f})" if len(ranked) > 1 else ""
    return ranked[(len(ranked) - 1) // 2], spread


def lua(template: str, services: int, run: str) -> str:
    pieces: list[str] = []
    for piece in re.split(r"(@@TAG@@|@@SVC@@)", template):
        if piece == "@@TAG@@":
            pieces.append("tag")
        elif piece == "@@SVC@@":
            pieces.append("svc")
        elif piece:
            pieces.append(json.dumps(piece))  # a JSON string literal is a valid Lua string literal here
    return (
        LUA.replace("{token}", WEBHOOK_TOKEN)
        .replace("{run}", run)
        .replace("{services}", str(max(services, 1)))
        .replace("{body}", " .. ".join(pieces))
    )


def _ms(out: str, label: str) -> float:
    found = re.search(rf"{label}\s+([\d.]+)(us|ms|s)\b", out)
    assert found, out
    return float(found.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[found.group(2)]


def parse(out: str) -> Result:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return Result(rps, _ms(out, "50%"), _ms(out, "99%"), errors)


def start(
    url: str, template: str, *, services: int, run: str, seconds: int, connections: int, workdir: Path
) -> subprocess.Popen[str]:
    script = workdir / f"{run}.lua"
    script.write_text(lua(template, services, run))
    return subprocess.Popen(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wrk(url: str, template: str, *, services: int, run: str, seconds: int, connections: int, workdir: Path) -> Result:
    proc = start(url, template, services=services, run=run, seconds=seconds, connections=connections, workdir=workdir)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    return parse(out)
