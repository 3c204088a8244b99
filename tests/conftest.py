import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def assert_binary(t: torch.Tensor):
    """Exactly ±1 everywhere (never 0, never anything else)."""
    assert torch.all((t == 1) | (t == -1)), f"non-binary values: {t[(t != 1) & (t != -1)][:5]}"
