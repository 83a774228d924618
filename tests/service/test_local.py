import numpy as np
from PIL import Image

from fewstep_cli.main import main


def test_generate_writes_one_png_per_seed(tiny_bundle, tmp_path, capsys):
    out = tmp_path / "img.png"
    assert (
        main(["generate", "a red circle", "--model", str(tiny_bundle), "--seed", "7", "-n", "3", "-o", str(out)]) == 0
    )
    printed = capsys.readouterr().out
    assert "seeds 7, 8, 9" in printed
    files = [tmp_path / f"img-{s}.png" for s in (7, 8, 9)]
    images = [np.asarray(Image.open(f)) for f in files]
    assert all(im.shape == (16, 16, 3) for im in images)
    # Same seed, same image; the grid holds the same pixels.
    assert main(["generate", "a red circle", "--model", str(tiny_bundle), "--seed", "8", "-o", str(out)]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(out)), images[1])
    grid = tmp_path / "grid.png"
    args = [
        "generate",
        "a red circle",
        "--model",
        str(tiny_bundle),
        "--seed",
        "7",
        "-n",
        "3",
        "--grid",
        "-o",
        str(grid),
    ]
    assert main(args) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(grid))[:16, 18:34], images[1])


def test_generate_errors_are_one_line(tiny_bundle, tmp_path, capsys):
    assert main(["generate", "x", "--model", "nope", "--bundles", str(tmp_path), "-o", str(tmp_path / "a.png")]) == 2
    assert "no bundle 'nope'" in capsys.readouterr().err
    assert main(["generate", "x", "--model", str(tiny_bundle), "--steps", "3", "-o", str(tmp_path / "a.png")]) == 2
    assert "supports steps [2, 4]" in capsys.readouterr().err
