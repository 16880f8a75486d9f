"""What `rollbackd status` and GET /v1/status show of the replicas: who leads, since when, heartbeats."""

from __future__ import annotations

from typing import Any

from rollbackd.ha import Leadership
from rollbackd.records import iso
from rollbackd.state import ReplicaView


async def replicas_json(store: ReplicaView, leadership: Leadership) -> dict[str, Any]:
    raw = await store.replicas()
    leader, now = raw["leader"], raw["now"]
    valid = leader is not None and now is not None and leader["expires_at"] > now
    out: dict[str, Any] = {
        "this_replica": leadership.replica_id,
        "this_replica_leads": leadership.leading,
        "leader": leader["holder"] if valid else None,
        "leader_since": iso(leader["since"]) if valid else None,
        "lease_expires_in_s": round(leader["expires_at"] - now, 1) if valid else None,
        "fence": leader["token"] if leader else None,
        "replicas": [
            {
                "id": r["id"],
                "host": r["host"],
                "pid": r["pid"],
                "listen": r["listen"],
                "started_at": iso(r["started_at"]),
                "last_heartbeat_s_ago": round(now - r["heartbeat_at"], 1) if now is not None else None,
                "leads": valid and r["id"] == leader["holder"],
                "leader_since": iso(r["leader_since"]),
            }
            for r in raw["replicas"]
        ],
    }
    return out


def render(ha: dict[str, Any]) -> list[str]:
    """Lines for the CLI."""
    if not ha.get("replicas"):
        return [f"replicas:     single node ({ha.get('this_replica')}), leads"]
    lead = ha.get("leader")
    out = [
        f"leader:       {lead or 'NONE (lease expired: a replica takes over within the lease)'}"
        + (f" since {ha['leader_since']}, lease renewed (expires in {ha['lease_expires_in_s']}s)" if lead else "")
    ]
    for r in ha["replicas"]:
        mark = "*" if r["leads"] else " "
        out.append(
            f"  {mark} {r['id']:<28} host {r['host']} pid {r['pid']} listen {r['listen']}"
            f"  heartbeat {r['last_heartbeat_s_ago']}s ago" + ("  LEADER" if r["leads"] else "")
        )
    return out
