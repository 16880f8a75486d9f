"""Target selection as a table: never "the previous release", always the newest green one other than
the live one, with its snapshot; code-only targets by `releases.data`; schema mismatch refused."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from rollbackd import releases
from rollbackd.reasons import Reason
from rollbackd.records import Release

T = 1_800_000_000.0


def r(
    version: str, *, green: bool = False, status: str = "superseded", schema: str | None = "1", rid: int = 0
) -> Release:
    return Release(
        service="rag",
        version=version,
        digest=f"sha256:{version}",
        schema_version=schema,
        status=status,
        green_at=T if green else None,
        id=rid or int(version.strip("v")) or 1,
    )  # type: ignore[arg-type]


@dataclass
class Snap:
    id: str
    release: str
    verified: bool = True


class Snapshots:
    def __init__(self, *snaps: Snap, fail: bool = False) -> None:
        self.snaps = list(snaps)
        self.fail = fail

    async def latest(self, *, release: str | None = None, verified_only: bool = True) -> Any:
        if self.fail:
            raise RuntimeError("store down")
        return next((s for s in self.snaps if s.release == release and (s.verified or not verified_only)), None)

    async def list(self) -> list[Snap]:
        return self.snaps


LIVE3 = r("v3", status="deployed")
CASES: list[tuple[str, list[Release], Snapshots | None, str, str | None, Any]] = [
    # name, history (newest first), snapshots, data, to_release, expected version | snapshot | Reason
    (
        "newest green with its snapshot",
        [LIVE3, r("v2", green=True), r("v1", green=True)],
        Snapshots(Snap("s2", "v2"), Snap("s1", "v1")),
        "required",
        None,
        ("v2", "s2"),
    ),
    (
        "never the previous one when it is not green",
        [LIVE3, r("v2"), r("v1", green=True)],
        Snapshots(Snap("s2", "v2"), Snap("s1", "v1")),
        "required",
        None,
        ("v1", "s1"),
    ),
    (
        "nothing to roll back to: only the live one is green",
        [r("v3", status="deployed", green=True), r("v2")],
        Snapshots(Snap("s2", "v2")),
        "required",
        None,
        Reason.NOTHING_TO_ROLL_BACK_TO,
    ),
    ("nothing to roll back to: empty history", [], Snapshots(), "required", None, Reason.NOTHING_TO_ROLL_BACK_TO),
    (
        "a rolled-back release is never a target",
        [LIVE3, r("v2", green=True, status="rolled_back"), r("v1", green=True)],
        Snapshots(Snap("s2", "v2"), Snap("s1", "v1")),
        "required",
        None,
        ("v1", "s1"),
    ),
    (
        "unverified snapshots do not count",
        [LIVE3, r("v2", green=True)],
        Snapshots(Snap("s2", "v2", verified=False)),
        "required",
        None,
        Reason.NOTHING_TO_ROLL_BACK_TO,
    ),
    (
        "code-only refused when data is required: an older green with data is taken",
        [LIVE3, r("v2", green=True), r("v1", green=True)],
        Snapshots(Snap("s1", "v1")),
        "required",
        None,
        ("v1", "s1"),
    ),
    (
        "code-only refused when data is required and none has data",
        [LIVE3, r("v2", green=True)],
        Snapshots(),
        "required",
        None,
        Reason.NOTHING_TO_ROLL_BACK_TO,
    ),
    (
        "code-only allowed when data is optional",
        [LIVE3, r("v2", green=True)],
        Snapshots(),
        "optional",
        None,
        ("v2", None),
    ),
    (
        "code-only with another schema is refused",
        [r("v3", status="deployed", schema="2"), r("v2", green=True)],
        Snapshots(),
        "optional",
        None,
        Reason.SCHEMA_MISMATCH,
    ),
    (
        "another schema is fine when the snapshot comes along",
        [r("v3", status="deployed", schema="2"), r("v2", green=True)],
        Snapshots(Snap("s2", "v2")),
        "optional",
        None,
        ("v2", "s2"),
    ),
    ("no snapshots configured: code only", [LIVE3, r("v2", green=True)], None, "required", None, ("v2", None)),
    (
        "no snapshots configured, schema differs",
        [r("v3", status="deployed", schema="2"), r("v2", green=True)],
        None,
        "required",
        None,
        Reason.SCHEMA_MISMATCH,
    ),
    (
        "snapshot store failing: code only when optional",
        [LIVE3, r("v2", green=True)],
        Snapshots(fail=True),
        "optional",
        None,
        ("v2", None),
    ),
    (
        "named release",
        [LIVE3, r("v2", green=True), r("v1")],
        Snapshots(Snap("s1", "v1")),
        "required",
        "v1",
        ("v1", "s1"),
    ),
    ("named release that does not exist", [LIVE3], Snapshots(), "required", "v9", Reason.NOTHING_TO_ROLL_BACK_TO),
    ("named release that is live", [LIVE3], Snapshots(), "optional", "v3", Reason.NOTHING_TO_ROLL_BACK_TO),
]


@pytest.mark.parametrize(
    ("history", "snaps", "data", "to_release", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_target_selection(
    history: list[Release], snaps: Snapshots | None, data: str, to_release: str | None, expected: Any
) -> None:
    if isinstance(expected, Reason):
        with pytest.raises(releases.NoTarget) as info:
            await releases.select_target(
                history,
                snapshots=snaps,
                data=data,  # type: ignore[arg-type]
                to_release=to_release,
            )
        assert info.value.reason is expected
        assert info.value.to_json()["reason"] == expected.value and info.value.detail
        return
    target = await releases.select_target(
        history,
        snapshots=snaps,
        data=data,  # type: ignore[arg-type]
        to_release=to_release,
    )
    version, snapshot = expected
    assert target.release.version == version and target.snapshot_set == snapshot
    assert target.code_only is (snapshot is None)
    body = target.to_json()
    assert body["version"] == version and body["snapshot_set"] == snapshot and body["why"]


async def test_why_explains_the_choice_and_the_skips() -> None:
    history = [LIVE3, r("v2", green=True), r("v1", green=True)]
    target = await releases.select_target(history, snapshots=Snapshots(Snap("s1", "v1")), data="required")
    assert "live is v3" in target.why and "s1" in target.why and "skipped newer green v2" in target.why


async def test_schema_mismatch_detail_names_both_schemas() -> None:
    history = [r("v3", status="deployed", schema="5"), r("v2", green=True, schema="4")]
    with pytest.raises(releases.NoTarget) as info:
        await releases.select_target(history, snapshots=Snapshots(), data="optional")
    assert "schema 4" in info.value.detail and "schema 5" in info.value.detail
    assert Reason.SCHEMA_MISMATCH.sentence in str(info.value)
