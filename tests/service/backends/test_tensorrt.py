"""The TensorRT backend (service.backends.tensorrt): the contract on a GPU, a clear error without one."""

import pytest

from fewstep.bundle import load_manifest
from service.backends.base import BackendError, BackendSettings
from service.loader import make_denoiser
from tests.service.backends.conftest import check_contract, cuda


@pytest.mark.gpu
@pytest.mark.skipif(not cuda(), reason="TensorRT needs an NVIDIA GPU")
def test_backend_contract(bundle):
    check_contract(bundle, BackendSettings(kind="tensorrt", device="cuda", precision="fp16"), 2e-2)


def test_without_tensorrt_it_is_a_clear_error(tiny_bundle):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tensorrt is installed")
    m = load_manifest(tiny_bundle)
    with pytest.raises(BackendError, match="tensorrt"):
        make_denoiser(tiny_bundle, m, BackendSettings(kind="tensorrt", device="cuda"))
