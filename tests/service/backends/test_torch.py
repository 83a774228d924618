"""The torch backend (service.backends.torch): the contract in fp32, bf16 and on CUDA."""

import pytest

from service.backends.base import BackendSettings
from tests.service.backends.conftest import check_contract, cuda


@pytest.mark.parametrize(
    ("settings", "row_tol"),
    [
        pytest.param(BackendSettings(kind="torch", precision="fp32"), 1e-5, id="torch-cpu-fp32"),
        pytest.param(BackendSettings(kind="torch", precision="bf16"), 5e-2, id="torch-cpu-bf16"),
        pytest.param(
            BackendSettings(kind="torch", device="cuda"),
            1e-4,
            id="torch-cuda",
            marks=[pytest.mark.gpu, pytest.mark.skipif(not cuda(), reason="CUDA is not available")],
        ),
    ],
)
def test_backend_contract(bundle, settings, row_tol):
    check_contract(bundle, settings, row_tol)
