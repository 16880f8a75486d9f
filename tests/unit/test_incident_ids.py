"""Incident ids: sortable, short enough for database names, and never repeated by one process."""

from __future__ import annotations

import re
from collections import OrderedDict

import pytest

from rollbackd.records import new_incident_id


def test_ids_in_one_second_never_repeat(monkeypatch: pytest.MonkeyPatch) -> None:
    # The random part is two bytes: force it to repeat, as two services opening incidents in one second could.
    draws = iter(["a1b2", "a1b2", "a1b2", "c3d4"])
    monkeypatch.setattr("rollbackd.records.secrets.token_hex", lambda n: next(draws))
    monkeypatch.setattr("rollbackd.records._ISSUED", OrderedDict())  # what other tests drew does not count
    first, second = new_incident_id(1.0), new_incident_id(1.0)
    assert (first, second) == ("19700101-000001-a1b2", "19700101-000001-c3d4")


def test_ids_sort_by_time_and_fit_database_names() -> None:
    ids = [new_incident_id(ts) for ts in (2.0, 60.0, 3600.0)]
    assert ids == sorted(ids)
    assert all(re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{4}", i) for i in ids)
