import socket

import pytest
import torch


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def assert_binary(t: torch.Tensor):
    """Exactly ±1 everywhere (never 0, never anything else)."""
    assert torch.all((t == 1) | (t == -1)), f"non-binary values: {t[(t != 1) & (t != -1)][:5]}"
