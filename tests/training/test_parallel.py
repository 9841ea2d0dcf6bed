"""Process-group set-up: a single-node gloo group uses the loopback interface unless the user chose one."""

from __future__ import annotations

import pytest

from hope.training import parallel

LOOPBACK = parallel.loopback_interface()


def _join(monkeypatch: pytest.MonkeyPatch, local_world: str) -> list[str]:
    """Run init_distributed as rank 0 of 2 with the group creation stubbed out; the backends it asked for."""
    asked = []
    monkeypatch.setattr(parallel.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(parallel.dist, "init_process_group", lambda backend, **kw: asked.append(backend))
    for k, v in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": local_world}.items():
        monkeypatch.setenv(k, v)
    info = parallel.init_distributed("cpu")
    assert info.world == 2 and info.is_main
    return asked


@pytest.mark.skipif(not LOOPBACK, reason="no loopback interface named lo/lo0")
def test_single_node_gloo_uses_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "")  # recorded, so what init_distributed sets is undone after
    monkeypatch.delenv("GLOO_SOCKET_IFNAME")
    assert _join(monkeypatch, "2") == ["gloo"]
    assert parallel.os.environ["GLOO_SOCKET_IFNAME"] == LOOPBACK


def test_an_explicit_interface_and_multi_node_groups_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "eth7")
    _join(monkeypatch, "2")
    assert parallel.os.environ["GLOO_SOCKET_IFNAME"] == "eth7"
    monkeypatch.delenv("GLOO_SOCKET_IFNAME")
    _join(monkeypatch, "1")  # 2 ranks, 1 per machine: the hostname's interface, as gloo chooses
    assert "GLOO_SOCKET_IFNAME" not in parallel.os.environ
