"""What a guarded service can do, as typed handles: its data sets, deployer, traffic switch, release
registry, verification suite and drill. Each capability's plugin (rollbackd.plugins) builds its handles
into ``ServiceRuntime.caps`` in ``build(core)``; a handle is None when the service does not configure it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the capabilities import the plan (steps); the plan knows them by type only
    from rollbackd.deploy import Deployer
    from rollbackd.deploy.ledger import Ledger
    from rollbackd.drill.runner import Drill
    from rollbackd.rollout.kit import Kit
    from rollbackd.snapshots.dataset import DataSet
    from rollbackd.traffic import TrafficSwitch
    from rollbackd.verify.suite import VerifySuite


@dataclass
class Capabilities:
    snapshots: DataSet | None = None  # `snapshots:` stores, restore-aside and swap
    deployer: Deployer | None = None  # `deploy:` the code's container (or command, or HTTP deploy hook)
    traffic: TrafficSwitch | None = None  # `traffic:` the switch; the null switch when not configured
    releases: Ledger | None = None  # the release registry (every service has one)
    verify: VerifySuite | None = None  # `verify:` the configured checks
    drill: Drill | None = None  # `drill:` the rehearsal
    rollout: Kit | None = None  # `rollout:` the canary plan's gates, canary runner and journal

    def traffic_switch(self) -> TrafficSwitch:
        """The switch, or the null switch that says nothing was switched."""
        if self.traffic is not None:
            return self.traffic
        from rollbackd.traffic.null import NullTrafficSwitch

        return NullTrafficSwitch()

    def by_name(self) -> Mapping[str, object]:
        """The configured handles by field name (what ``ServiceRuntime.resources`` used to hold)."""
        return {f.name: value for f in fields(self) if (value := getattr(self, f.name)) is not None}
