"""Prompts to text states: the bundle's tokenizer (`tokenizers`) and text-encoder backend, with a cache.

Tokenization pads and truncates to the manifest's `max_tokens`, exactly as training did
(`distill.kit.text.TextEncoder`: Hugging Face tokenizer, padding="max_length"), so a prompt's token
states are the ones the denoiser was trained on. States at padded positions are zeroed (training
stored only the valid rows); the network masks them anyway, so this only keeps both sides equal.

Encoded prompts are kept in an LRU keyed by the prompt: a serving workload repeats prompts (the
empty guidance prompt above all), and the encoder costs as much as a denoiser step here.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from service.backends.base import TextEncoder


class BundleTokenizer:
    """A `tokenizers.Tokenizer` from the bundle, padded/truncated to a fixed length."""

    def __init__(self, tokenizer_json: str | Path, max_tokens: int) -> None:
        from tokenizers import Tokenizer

        self.max_tokens = max_tokens
        self.tok = Tokenizer.from_file(str(tokenizer_json))
        self.tok.no_padding()
        self.tok.enable_truncation(max_length=max_tokens)
        pad_id = self.tok.token_to_id("[PAD]")
        self.tok.enable_padding(length=max_tokens, pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")

    def __call__(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        enc = self.tok.encode_batch(list(prompts))
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        return ids, mask


class PromptEncoder:
    """prompts -> (states (B, L, D) float32, mask (B, L) int64), cached per prompt; thread-safe."""

    def __init__(self, tokenizer, encoder: TextEncoder, cache_size: int = 4096) -> None:
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.cache_size = cache_size
        self._cache: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __call__(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        rows: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        with self._lock:
            for p in dict.fromkeys(prompts):
                if p in self._cache:
                    self._cache.move_to_end(p)
                    rows[p] = self._cache[p]
                    self.hits += 1
        todo = [p for p in dict.fromkeys(prompts) if p not in rows]
        if todo:
            ids, mask = self.tokenizer(todo)
            states = np.asarray(self.encoder(ids, mask), dtype=np.float32) * mask[..., None].astype(np.float32)
            with self._lock:
                self.misses += len(todo)
                for i, p in enumerate(todo):
                    rows[p] = (states[i], mask[i])
                    if self.cache_size:
                        self._cache[p] = rows[p]
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return np.stack([rows[p][0] for p in prompts]), np.stack([rows[p][1] for p in prompts])
