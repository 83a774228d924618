import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fewstep.cli import build_parser, main


def _exe() -> str:
    return shutil.which("fewstep") or str(Path(sys.executable).parent / "fewstep")


@pytest.mark.parametrize("argv", [["--help"], ["data", "--help"], ["data", "preview", "--help"], ["train", "--help"]])
def test_every_subcommand_has_help(argv):
    r = subprocess.run([_exe(), *argv], capture_output=True, text=True)
    assert r.returncode == 0 and "usage: fewstep" in r.stdout


def test_parser_lists_commands():
    help_text = build_parser().format_help()
    assert "data" in help_text and "train" in help_text


def test_data_preview_writes_a_captioned_grid(tmp_path):
    out = tmp_path / "grid.png"
    assert main(["data", "preview", "--out", str(out), "--n", "6", "--cols", "3", "--seed", "4"]) == 0
    img = np.asarray(Image.open(out))
    # 3 columns of 128-px tiles and 2 rows of tiles with caption space underneath
    assert img.shape[1] == 3 * (128 + 4) + 4 and img.shape[0] > 2 * 128
    assert img.std() > 20
