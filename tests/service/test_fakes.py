"""The fake backend (service.fakes) that the engine and HTTP tests run on."""

import numpy as np
import pytest

from service.backends.base import Denoiser
from service.fakes import FakeDenoiser


def test_fake_backend_meets_the_contract():
    den = FakeDenoiser(max_batch=4)
    assert isinstance(den, Denoiser)
    with pytest.raises(ValueError, match="max_batch"):
        den(*(np.zeros((5, *shape), np.float32) for shape in ((3, 8, 8), (), (8, 4), (8,))))
