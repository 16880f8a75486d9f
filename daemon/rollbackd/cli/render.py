"""Readable text for humans at 3 AM: short tables, times as ages, the important thing first."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from rollbackd.ha import view as ha_view


def age(ts: str | float | None) -> str:
    if ts is None:
        return "-"
    when = datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() if isinstance(ts, str) else float(ts)
    secs = int(time.time() - when)
    if secs < 0:
        return f"in {_short(-secs)}"
    return f"{_short(secs)} ago"


def _short(secs: int) -> str:
    if secs < 60:
        return f"{secs}s"
    if secs < 3600:
        return f"{secs // 60}m"
    if secs < 86400:
        return f"{secs // 3600}h{(secs % 3600) // 60:02d}m"
    return f"{secs // 86400}d{(secs % 86400) // 3600:02d}h"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _pause_text(p: dict[str, Any] | None) -> str:
    if not p:
        return "no"
    until = f" until {p['until']}" if p.get("until") else ""
    return f"{p['kind'].upper()}: {p['reason']} (by {p['by']}, {age(p['since'])}){until}"


def _serving(svc: dict[str, Any]) -> list[str]:
    """Which container serves (a failed revert puts the previous one back), or NO RUNNING CONTAINER."""
    running = svc.get("containers") or {}
    return [f"  serving:      {', '.join(running['serving']) or running.get('note')}"] if "serving" in running else []


def _acceptors(acc: dict[str, Any] | None) -> list[str]:
    if not acc:
        return []
    line = f"acceptors:    {acc['serving']} of {acc['configured']} serving"
    if acc["serving"] < acc["configured"]:
        line += "  (the daemon takes their share; log: acceptor_exited)"
    return [line]


def status(body: dict[str, Any]) -> str:
    out = [f"mode: {body['mode']}    global pause: {_pause_text(body.get('paused'))}"]
    out += [*(ha_view.render(body["ha"]) if "ha" in body else []), *_acceptors(body.get("acceptors")), ""]
    for name, svc in body["services"].items():
        out.append(f"service {name}")
        out.append(f"  paused:       {_pause_text(svc.get('paused'))}")
        out.append(f"  held:         {_pause_text(svc.get('held'))}")
        budget = svc["budget"]
        out.append(
            f"  budget:       {budget['remaining']}/{budget['max']} automatic rollbacks left"
            f" (window {_short(int(budget['window_s']))})"
        )
        cooldown = svc["cooldown_remaining_s"]
        out.append(f"  cooldown:     {_short(int(cooldown)) + ' left' if cooldown else 'none'}")
        out.append(f"  releases:     live {svc.get('live_release') or '-'}, last green {svc.get('last_green') or '-'}")
        out += _serving(svc)
        snaps = svc.get("snapshots")
        if snaps is not None:
            latest = snaps.get("latest")
            out.append(
                f"  snapshots:    {snaps['count']}, latest "
                + (
                    f"{latest['id']} ({age(latest['created_at'])}, "
                    f"{'verified' if latest['verified'] else 'UNVERIFIED'},"
                    f" release {latest.get('release') or '-'})"
                    if latest
                    else "none"
                )
            )
        verification = svc.get("verification")
        if verification:
            out.append(f"  verified:     {str(verification.get('verdict', '?')).upper()} {age(verification.get('at'))}")
            for result in verification.get("results", [])[:8]:
                out.append(
                    f"                - {result.get('verifier')}: {str(result.get('verdict')).upper()}"
                    f" {result.get('summary', '')}"
                )
        drill = (svc.get("drill") or {}).get("last")
        if drill:
            out.append(
                f"  drill:        {drill['verdict']} {age(drill.get('finished_at'))}, time to restore "
                f"{drill['time_to_restore_s'] if drill.get('time_to_restore_s') is not None else '-'}s"
                f" ({drill['id']}{'' if drill.get('torn_down') else ', NOT TORN DOWN'})"
            )
            out.append(f"                {drill.get('reason') or ''}")
        if (svc.get("drill") or {}).get("running"):
            out.append(f"  drilling:     {svc['drill']['running']} (running now)")
        inc = svc.get("active_incident")
        if inc:
            prog = inc.get("progress", {})
            out.append(
                f"  ACTIVE:       {inc['id']} {inc['state']} ({prog.get('done', 0)}/{prog.get('total', '?')}"
                f" steps) started {age(inc.get('started_at') or inc['created_at'])}"
            )
            for step in inc.get("steps", []):
                out.append(f"                - {step['name']}: {step['state']}")
        else:
            out.append("  active:       none")
        decisions = svc.get("last_decisions") or []
        if decisions:
            out.append("  last decisions:")
            rows = [
                [
                    age(d["at"]),
                    d.get("alertname") or "-",
                    d.get("action") or "-",
                    d.get("reason") or "-",
                    d.get("incident_id") or "",
                ]
                for d in decisions[:5]
            ]
            out.extend(
                "    " + line for line in table(["when", "alert", "action", "reason", "incident"], rows).splitlines()
            )
        out.append("")
    return "\n".join(out).rstrip()


def history(incidents: list[dict[str, Any]]) -> str:
    rows = [
        [
            i["id"],
            i["service"],
            i["state"],
            i["trigger"]["kind"],
            i["trigger"].get("alertname") or i["trigger"].get("reason", "")[:40],
            age(i["created_at"]),
        ]
        for i in incidents
    ]
    return table(["incident", "service", "state", "trigger", "why", "opened"], rows) if rows else "no incidents"


def incident(body: dict[str, Any]) -> str:
    trig = body["trigger"]
    out = [
        f"incident {body['id']}  service {body['service']}  state {body['state'].upper()}"
        + ("  (dry run)" if body.get("dry_run") else ""),
        f"trigger:  {trig['kind']} by {trig['requested_by']}: {trig.get('alertname') or trig.get('reason')}",
        f"opened:   {body['created_at']}  started: {body.get('started_at') or '-'}"
        f"  finished: {body.get('finished_at') or '-'}",
    ]
    if body.get("target"):
        out.append(f"target:   {body['target'].get('version')} ({body['target'].get('why', '')})")
        changed = body["target"].get("what_changed") or []
        out += ["what changed:", *(f"  {line}" for line in changed)] if changed else []
    if body.get("error"):
        out.append(f"error:    {body['error']}")
    if body.get("rollout"):  # the same gate table as the rollout's Slack thread
        from rollbackd.rollout.table import render as rollout_table

        out += ["", rollout_table(body["rollout"])]
    rows = [
        [
            str(s["index"]),
            s["name"],
            s["state"],
            str(s["attempts"]),
            f"{s['duration_s']:.2f}s" if s.get("duration_s") is not None else "-",
            _first_line(s.get("error") or _output_summary(s.get("output") or {}))[:90],
        ]
        for s in body.get("steps", [])
    ]
    out += ["", table(["#", "step", "state", "tries", "took", "result"], rows)] if rows else []
    events = body.get("events") or []
    if events:
        out += ["", "journal:"]
        out += [
            f"  {datetime.fromtimestamp(e['at']).strftime('%H:%M:%S')} {e['kind']} "
            f"{e.get('reason') or ''} {_event_detail(e['data'])}".rstrip()
            for e in events
        ]
    return "\n".join(out)


_PROCESS_FIELDS = ("step", "attempt", "pgid", "resumes", "killed")  # step_process, step_interrupted


def _event_detail(data: dict[str, Any]) -> str:
    said = data.get("why") or data.get("sentence")
    if said:
        return str(said)
    return " ".join(f"{k}={data[k]}" for k in _PROCESS_FIELDS if data.get(k) not in (None, []))


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _output_summary(output: dict[str, Any]) -> str:
    if "summary" in output:
        return str(output["summary"])
    if "would" in output:
        return f"would: {output['would']}"
    return ", ".join(
        f"{k}={v}"
        for k, v in output.items()
        if isinstance(v, int | float | str) and k not in ("stdout", "stderr", "response")
    )[:70]
