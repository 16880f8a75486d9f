"""The TrafficSwitch contract: every backend (http against a local admin API, command with real
programs, null) reads and sets the weight the same way; errors are BackendErrors naming the backend."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rollbackd.errors import BackendError
from rollbackd.traffic.command import CommandTrafficSwitch
from rollbackd.traffic.http import HttpTrafficSwitch
from rollbackd.traffic.null import NullTrafficSwitch
from tests.support.http_stub import JsonHandler, serve


class _Admin(JsonHandler):
    def do_GET(self) -> None:
        self.send_json(self.server.status, {"canary": {"weight": self.server.weight}})

    def do_POST(self) -> None:
        body = self.read_json()
        self.server.bodies.append((self.path, body))
        self.server.weight = body["backends"][0]["weight"]
        self.send_json(self.server.status, {})


@pytest.fixture
def admin() -> Iterator[Any]:
    with serve(_Admin, weight=100, bodies=[], status=200) as server:
        yield server


class TrafficContract:
    null = False

    async def test_set_then_read(self, switch: Any) -> None:
        await switch.set_weight(0)
        assert await switch.weight() == (100 if self.null else 0)
        await switch.set_weight(37)
        assert await switch.weight() == (100 if self.null else 37)

    async def test_kind_is_the_config_type(self, switch: Any) -> None:
        assert switch.kind in ("http", "command", "null")


class TestHttp(TrafficContract):
    @pytest.fixture
    def switch(self, admin: Any) -> HttpTrafficSwitch:
        url = f"http://127.0.0.1:{admin.server_address[1]}"
        return HttpTrafficSwitch(
            HttpTrafficSwitch.Options(
                type="http",
                get_url=f"{url}/state",
                weight_field="canary.weight",
                set_url=f"{url}/set/{{weight}}",
                set_method="POST",
                body={"backends": [{"name": "rag-v2", "weight": "{weight}"}]},
            )
        )

    async def test_body_template_gets_a_number(self, switch: Any, admin: Any) -> None:
        await switch.set_weight(10)
        assert admin.bodies[-1] == ("/set/10", {"backends": [{"name": "rag-v2", "weight": 10}]})

    async def test_errors_name_the_request(self, switch: Any, admin: Any) -> None:
        admin.status = 503
        with pytest.raises(BackendError) as info:
            await switch.weight()
        assert "traffic http" in str(info.value) and "503" in str(info.value) and info.value.retryable


class TestCommand(TrafficContract):
    @pytest.fixture
    def switch(self, tmp_path: Path) -> CommandTrafficSwitch:
        state = tmp_path / "weight"
        state.write_text("100\n")
        read = [sys.executable, "-c", "import sys; print(open(sys.argv[1]).read().strip())", str(state)]
        write = [sys.executable, "-c", "import sys; open(sys.argv[1], 'w').write(sys.argv[2])", str(state), "{weight}"]
        return CommandTrafficSwitch(CommandTrafficSwitch.Options(type="command", get_argv=read, set_argv=write))

    async def test_a_failing_program_is_a_backend_error(self, tmp_path: Path) -> None:
        bad = CommandTrafficSwitch(
            CommandTrafficSwitch.Options(
                type="command", get_argv=[sys.executable, "-c", "print('half')"], set_argv=["/bin/false"]
            )
        )
        with pytest.raises(BackendError, match="not an integer"):
            await bad.weight()
        with pytest.raises(BackendError, match="exited 1"):
            await bad.set_weight(3)


class TestNull(TrafficContract):
    null = True

    @pytest.fixture
    def switch(self) -> NullTrafficSwitch:
        return NullTrafficSwitch()
