"""The second judge (`distill.evaluation.analytic`): its accuracy against the true scene records of
real rendered scenes (the evaluation set's own renders, clean and with pixel noise), that it tells
a wrong caption from a right one, its figures beside a row's, and that bad input is refused."""

import numpy as np
import pytest

import shapesworld as shapes
from distill.evaluation.analytic import read_scene, read_scenes, second_judge
from distill.evaluation.evaluator import attribute_accuracy
from distill.evaluation.per_image import PerImage

# What the reader must reach on renders (measured on the 400 prompts of the `items` fixture: 1.0 on
# background, occupancy, colour and size, 0.997 on shape, 0.995 on whole scenes; with Gaussian
# pixel noise of std 10: shape 0.991, scenes 0.985).
CLEAN = {"background": 0.99, "occupancy": 0.99, "colour": 0.99, "shape": 0.98, "size": 0.99, "scene": 0.98}
NOISY = {"background": 0.99, "occupancy": 0.99, "colour": 0.99, "shape": 0.97, "size": 0.98, "scene": 0.96}


def _truth(items):
    return [e.item.scene for e in items]


def test_it_reads_rendered_scenes_like_their_records(items, reference):
    acc = attribute_accuracy(read_scenes(reference), _truth(items))
    print("analytic reader on renders:", acc)  # the figure, for the log
    for key, floor in CLEAN.items():
        assert acc[key] >= floor, (key, acc)


def test_it_reads_noisy_renders(items, reference):
    noisy = np.clip(reference + np.random.default_rng(0).normal(0, 10, reference.shape), 0, 255).astype(np.uint8)
    acc = attribute_accuracy(read_scenes(noisy), _truth(items))
    print("analytic reader on renders + noise std 10:", acc)
    for key, floor in NOISY.items():
        assert acc[key] >= floor, (key, acc)


def _render(background, *objects):
    rng = np.random.default_rng(1)
    scene = shapes.Scene(background, tuple(objects))
    return shapes.render(scene, shapes.replace(scene, rng), 32)


def test_a_wrong_caption_fails_and_the_right_one_passes():
    img = _render(
        "white", shapes.ShapeObject("red", "circle", "large", 0), shapes.ShapeObject("blue", "cross", "small", 8)
    )
    scene = read_scene(img)
    ok = shapes.satisfies(scene, shapes.parse_prompt("a large red circle in the top left and a small blue cross"))
    assert ok["all"]
    for wrong in ("a large blue circle and a small red cross", "a red square and a blue cross",
                  "a red circle", "a small red circle and a blue cross"):  # fmt: skip
        assert not shapes.satisfies(scene, shapes.parse_prompt(wrong))["all"], wrong


@pytest.mark.parametrize("shape", shapes.SHAPES)
@pytest.mark.parametrize("size", list(shapes.SIZES))
def test_every_shape_and_size_alone(shape, size):
    for background in shapes.BACKGROUNDS:
        obj = shapes.ShapeObject("green", shape, size, 4)
        assert read_scene(_render(background, obj)) == shapes.Scene(background, (obj,))


def test_an_empty_image_has_no_objects():
    img = np.full((32, 32, 3), shapes.BACKGROUNDS["gray"], np.uint8)
    assert read_scene(img) == shapes.Scene("gray", ())


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="uint8"):
        read_scene(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="R, R, 3"):
        read_scene(np.zeros((32, 16, 3), np.uint8))


def test_second_judge_pairs_with_the_evaluators_record(items, reference):
    n = 60
    sub, ref = items[:n], reference[:n]
    scenes = _truth(sub)
    feats = np.zeros((n, 4), np.float32)
    rec = PerImage.build(sub, scenes, scenes, feats, feats, ref, ref)
    # "generated" images: the renders, with the first 20 replaced by empty backgrounds
    gen = ref.copy()
    gen[:20] = np.array(shapes.BACKGROUNDS["black"], np.uint8)
    figures, own = second_judge(rec, gen, ref, sub, resamples=50)
    assert own.checks.shape == rec.checks.shape and own.meta["judge"] == "analytic"
    assert np.array_equal(own.features, rec.features) and np.array_equal(own.seeds, rec.seeds)
    assert not own.checks[:20, 0].any() and own.checks[20:, 0].mean() > 0.95
    overall, ci = figures["adherence_analytic"]["overall"], figures["adherence_analytic_ci"]["overall"]
    assert overall < 0.8 and ci[0] <= overall <= ci[1]
    assert figures["analytic_reader_accuracy"]["scene"] > 0.95
