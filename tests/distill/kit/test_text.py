import subprocess
import sys

import torch

from distill.kit.config import TextConfig
from distill.kit.text import NULL_CAPTION, TextEncoder, bundled_minilm_dir


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
        "from distill.kit.text import load_hf_encoder, bundled_minilm_dir;"
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


def _word_tokenizer(path):
    """A word-level fast tokenizer saved as a Hugging Face directory (no vocab download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {
        w: i for i, w in enumerate(["<pad>", "<unk>", "</s>", "a", "red", "blue", "circle", "square", "on", "the"])
    }
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="</s>")
    fast.save_pretrained(path)
    return len(vocab)


def test_t5_and_clip_text_encoders_load_by_config(tmp_path):
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(0)
    t5_dir, clip_dir = tmp_path / "t5", tmp_path / "clip"
    n = _word_tokenizer(t5_dir)
    _word_tokenizer(clip_dir)
    T5EncoderModel(T5Config(vocab_size=n, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)).save_pretrained(
        t5_dir
    )
    clip_cfg = CLIPTextConfig(
        vocab_size=n, hidden_size=24, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=16, pad_token_id=0, eos_token_id=2, bos_token_id=2,
    )  # fmt: skip
    CLIPTextModel(clip_cfg).save_pretrained(clip_dir)
    for path, dim in ((t5_dir, 16), (clip_dir, 24)):
        enc = TextEncoder(TextConfig(encoder=str(path), max_tokens=8, cache_size=0))
        states, mask = enc.encode(["a red circle", "a blue square on the red circle"])
        assert enc.dim == dim and states.shape == (2, 8, dim)
        assert mask.sum(1).tolist() == [3, 7]
        again, _ = enc.encode(["a red circle"])
        torch.testing.assert_close(again[0], states[0])
