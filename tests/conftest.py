"""Shared fixtures: the real MiniLM encoder (loaded once) and a tiny random BERT built in the test."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def minilm():
    from distill.config import TextConfig
    from distill.text import TextEncoder

    return TextEncoder(TextConfig(max_tokens=28))


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A randomly initialised 2-layer BERT with a word-level vocabulary, saved as an HF directory."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from fewstep import shapes

    path = tmp_path_factory.mktemp("tiny_bert")
    words = sorted(
        {w for i in range(500) for w in shapes.sample(0, i).caption.replace(",", " , ").replace(":", " : ").split()}
    )
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",", ":", *[w for w in words if w not in {",", ":"}]]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(path)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    BertModel(cfg).save_pretrained(path)
    return path
