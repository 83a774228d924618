import subprocess
import sys

import torch

from distill.config import TextConfig
from distill.text import NULL_CAPTION, TextEncoder, bundled_minilm_dir


def test_minilm_loads_offline_and_is_deterministic(minilm):
    assert minilm.dim == 384
    caps = ["a red circle", "on a black background: a small blue cross at the bottom", NULL_CAPTION]
    states, mask = minilm.encode(caps)
    assert states.shape == (3, 28, 384) and mask.shape == (3, 28) and mask.dtype == torch.bool
    assert mask[2].sum() == 2  # [CLS] [SEP] for the null caption
    assert mask[0].sum() < mask[1].sum()
    assert (states[~mask] == 0).all()
    fresh = TextEncoder(TextConfig(max_tokens=28, cache_size=0))
    again, _ = fresh.encode(list(reversed(caps)))
    torch.testing.assert_close(again.flip(0), states, rtol=0, atol=0)  # bitwise, any batch order
    assert (states[0] - states[1]).abs().max() > 0.1


def test_cache_hits_return_identical_rows(minilm):
    a, _ = minilm.encode(["a green square", "a pink cross"])
    hits = minilm.hits
    b, _ = minilm.encode(["a pink cross", "a green square", "a pink cross"])
    assert minilm.hits >= hits + 2
    torch.testing.assert_close(b[[1, 0]], a, rtol=0, atol=0)


def test_model_loads_with_network_disabled():
    """No network, ever: load the bundled directory in a fresh process with the hub forced offline."""
    code = (
        "import os; os.environ['HF_HUB_OFFLINE']='1';"
        "from distill.text import load_hf_encoder, bundled_minilm_dir;"
        "m, t = load_hf_encoder(bundled_minilm_dir()); print(sum(p.numel() for p in m.parameters()))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert 22_000_000 < int(out.strip().splitlines()[-1]) < 23_500_000
    assert (bundled_minilm_dir() / "model.safetensors").is_file()


def test_any_local_encoder_directory(tiny_bert_dir):
    enc = TextEncoder(TextConfig(encoder=str(tiny_bert_dir), max_tokens=16))
    assert enc.dim == 32
    states, mask = enc.encode(["a red circle in the top left", "a blue square"])
    assert states.shape == (2, 16, 32) and mask.sum(1).tolist() == [9, 5]


def test_missing_encoder_dir_names_the_key(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match=r"text\.encoder"):
        TextEncoder(TextConfig(encoder=str(tmp_path / "nope")))
