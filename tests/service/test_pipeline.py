import numpy as np
import pytest

from service.errors import InvalidArgument
from service.fakes import FakeDenoiser, fake_pipeline
from service.pipeline import ImageJob


def test_an_image_is_the_same_alone_or_in_any_batch():
    p = fake_pipeline()
    jobs = [ImageJob(f"prompt {i}", 10 + i, 4, [1.0, 2.0, 3.5][i % 3]) for i in range(7)]
    batch = p.generate(jobs)
    assert batch.shape == (7, 8, 8, 3) and batch.dtype == np.uint8
    for i in (0, 3, 6):
        np.testing.assert_array_equal(p.generate([jobs[i]])[0], batch[i])
    np.testing.assert_array_equal(p.generate(jobs[::-1])[::-1], batch)


def test_teacher_guidance_doubles_the_batch_and_students_do_not():
    den = FakeDenoiser()
    fake_pipeline(denoiser=den).generate([ImageJob("a", 0, 4, 3.0), ImageJob("b", 1, 4, 3.0)])
    assert den.batch_sizes == [4] * 4
    den = FakeDenoiser()
    fake_pipeline(denoiser=den).generate([ImageJob("a", 0, 4, 1.0)])
    assert den.batch_sizes == [1] * 4  # w = 1: the conditional prediction alone
    den = FakeDenoiser()
    fake_pipeline(denoiser=den, network_input=True).generate([ImageJob("a", 0, 4, 3.0)] * 3)
    assert den.batch_sizes == [3] * 4


def test_the_backend_max_batch_is_respected():
    den = FakeDenoiser(max_batch=3)
    p = fake_pipeline(denoiser=den)
    out = p.generate([ImageJob("a", i, 4, 2.0) for i in range(4)])  # 8 rows with guidance
    assert max(den.batch_sizes) <= 3
    np.testing.assert_array_equal(out, fake_pipeline().generate([ImageJob("a", i, 4, 2.0) for i in range(4)]))


def test_guidance_and_negative_prompt_change_the_image():
    p = fake_pipeline()
    base = p.generate([ImageJob("a cat", 1, 4, 3.0)])
    assert not np.array_equal(base, p.generate([ImageJob("a cat", 1, 4, 6.0)]))
    assert not np.array_equal(base, p.generate([ImageJob("a cat", 1, 4, 3.0, negative_prompt="a dog")]))
    assert not np.array_equal(base, p.generate([ImageJob("a cat", 2, 4, 3.0)]))


@pytest.mark.parametrize(
    ("job", "field", "network_input"),
    [
        (ImageJob("a", 0, 5, 3.0), "steps", False),
        (ImageJob("a", 0, 4, 9.0), "guidance", False),
        (ImageJob("a", 0, 4, 0.5), "guidance", False),
        (ImageJob("a", -1, 4, 3.0), "seed", False),
        (ImageJob("a", 0, 4, 3.0, negative_prompt="b"), "negative_prompt", True),
    ],
)
def test_bad_jobs_name_the_field(job, field, network_input):
    p = fake_pipeline(network_input=network_input)
    with pytest.raises(InvalidArgument) as e:
        p.generate([job])
    assert e.value.field == field
    if field == "steps":
        assert "supports steps [4, 8], not 5" in str(e.value)


def test_one_call_runs_one_step_count():
    p = fake_pipeline()
    with pytest.raises(InvalidArgument, match="one step count"):
        p.generate([ImageJob("a", 0, 4, 3.0), ImageJob("a", 0, 8, 3.0)])
    assert p.generate([]).shape == (0, 8, 8, 3)
