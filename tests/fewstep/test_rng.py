import numpy as np
import pytest

from fewstep.rng import SeededNoise, batch_noise, image_noise


def test_same_seed_same_noise_and_streams_differ():
    a = image_noise(7, 0, (3, 8, 8))
    assert a.dtype == np.float32 and a.shape == (3, 8, 8)
    np.testing.assert_array_equal(a, image_noise(7, 0, (3, 8, 8)))
    assert not np.array_equal(a, image_noise(7, 1, (3, 8, 8)))
    assert not np.array_equal(a, image_noise(8, 0, (3, 8, 8)))


def test_noise_independent_of_batch():
    alone = batch_noise([5], 2, (3, 4, 4))[0]
    inside = batch_noise([1, 9, 5, 3], 2, (3, 4, 4))[2]
    np.testing.assert_array_equal(alone, inside)
    src = SeededNoise([5, 6], (3, 4, 4))
    np.testing.assert_array_equal(src.step(1)[0], alone)


@pytest.mark.parametrize("bad", [-1, 2**63, 1.5, "3"])
def test_bad_seeds_rejected(bad):
    with pytest.raises(ValueError):
        image_noise(bad, 0, (1,))
