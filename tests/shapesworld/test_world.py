import numpy as np
import pytest

import shapesworld as W


def test_deterministic_by_seed_and_index():
    a, b = W.sample(3, 17), W.sample(3, 17)
    assert a == b
    np.testing.assert_array_equal(W.render(a.scene, a.placements), W.render(b.scene, b.placements))
    assert W.sample(3, 18) != a and W.sample(4, 17) != a


@pytest.mark.parametrize("phrasing", ["train", "held_out"])
def test_every_caption_states_exactly_its_record(phrasing):
    for i in range(3000):
        item = W.sample(0, i, phrasing=phrasing)
        spec = W.parse_prompt(item.caption)
        assert spec == W.spec_of(item.scene, item.mentions, item.background_mentioned), item.caption
        assert W.satisfies(item.scene, spec)["all"], item.caption
        assert (spec.background is not None) == item.background_mentioned
        assert len(spec.objects) == len(item.scene.objects)
        for o, m, so in zip(spec.objects, item.mentions, item.scene.objects, strict=True):
            assert (o.colour, o.shape) == (so.colour, so.shape)
            assert (o.size is not None) == m.size and (o.cell is not None) == m.position


def test_caption_probabilities_and_templates():
    items = [W.sample(1, i) for i in range(4000)]
    one = np.mean([len(it.scene.objects) == 1 for it in items])
    bg = np.mean([it.background_mentioned for it in items])
    size = np.mean([m.size for it in items for m in it.mentions])
    assert abs(one - 0.6) < 0.03 and abs(bg - 0.5) < 0.03 and abs(size - 0.7) < 0.03
    # several phrasings are in use
    starts = {it.caption.split()[0].lower() for it in items}
    assert {"on", "an", "a"} <= starts
    two = [W.sample(1, i, p_two=0.75) for i in range(2000)]
    assert abs(np.mean([len(it.scene.objects) == 2 for it in two]) - 0.75) < 0.03


def test_held_out_pairs_never_in_training_mode():
    for i in range(20000):
        for o in W.sample(2, i, "train").scene.objects:
            assert (o.colour, o.shape) not in W.HELD_OUT
    held = [W.sample(2, i, "held_out") for i in range(200)]
    assert all((it.scene.objects[0].colour, it.scene.objects[0].shape) in W.HELD_OUT for it in held)
    assert all(W.parse_prompt(it.caption).held_out for it in held)


def test_two_objects_never_overlap_or_share_a_cell():
    for i in range(3000):
        it = W.sample(5, i)
        if len(it.scene.objects) == 2:
            a, b = it.scene.objects
            pa, pb = it.placements
            assert a.cell != b.cell
            reach = W.SIZES[a.size] + W.SIZES[b.size]
            assert abs(pa.cx - pb.cx) >= reach or abs(pa.cy - pb.cy) >= reach


def test_rendered_colours_within_palette_jitter():
    checked = 0
    for i in range(400):
        it = W.sample(6, i)
        img = W.render(it.scene, it.placements, 32)
        for o, p in zip(it.scene.objects, it.placements, strict=True):
            if o.size != "large":
                continue
            px = img[int(p.cy * 32), int(p.cx * 32)].astype(int)  # the centre is inside every shape
            assert np.all(np.abs(px - np.array(W.COLOURS[o.colour])) <= W.COLOUR_JITTER), (o, px)
            checked += 1
        values, counts = np.unique(img.reshape(-1, 3), axis=0, return_counts=True)
        assert tuple(values[counts.argmax()]) == W.BACKGROUNDS[it.scene.background]
    assert checked > 100


def test_render_sizes_and_errors():
    it = W.sample(0, 0)
    assert W.render(it.scene, it.placements, 64).shape == (64, 64, 3)
    with pytest.raises(ValueError):
        W.render(it.scene, it.placements, 30)


def test_parse_and_satisfy_hand_written_prompts():
    spec = W.parse_prompt("on a gray background: a small blue cross at the bottom and a yellow square on the left")
    assert spec.background == "gray"
    assert spec.objects == (
        W.ObjectSpec("blue", "cross", "small", W.CELLS.index("bottom")),
        W.ObjectSpec("yellow", "square", None, W.CELLS.index("left")),
    )
    good = W.Scene("gray", (W.ShapeObject("yellow", "square", "large", 3), W.ShapeObject("blue", "cross", "small", 7)))
    assert W.satisfies(good, spec)["all"]
    wrong_colour = W.Scene(
        "gray", (W.ShapeObject("red", "square", "large", 3), W.ShapeObject("blue", "cross", "small", 7))
    )
    r = W.satisfies(wrong_colour, spec)
    assert not r["all"] and not r["colour"] and r["background"]
    assert not W.satisfies(W.Scene("gray", good.objects[:1]), spec)["all"]
    with pytest.raises(ValueError):
        W.parse_prompt("a photograph of a cat")
