"""Build .gpu/ for a lent GPU machine: pydantic wheels are fetched with pip download (see README);
this writes the MiniLM copy that fits the 64 MiB transfer limit: fp16 weights, gzip-compressed, with
the word-embedding rows of tokens that never occur in shapes-world captions zeroed. Both phrasing
sets count: before they did, the held-out phrasings' words were zeroed there, and the GPU's
held-out-phrasing figures (results/teacher-gpu/) are void; the CPU rows are the measurement.
"""

import gzip
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from transformers import AutoTokenizer

import shapesworld as shapes
from distill.kit.text import bundled_minilm_dir

src, dst = bundled_minilm_dir(), Path(".gpu/minilm")
dst.mkdir(parents=True, exist_ok=True)
for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
    shutil.copy(src / name, dst / name)
tok = AutoTokenizer.from_pretrained(src, local_files_only=True)
ids = {0, 100, 101, 102, 103, *tok("")["input_ids"]}
for mode in ("train", "held_out", "all"):
    for phrasing in ("train", "held_out"):  # the evaluation's held-out phrasings use words training never does
        for i in range(20000):
            ids.update(tok(shapes.sample(i % 7, i, mode, phrasing=phrasing).caption)["input_ids"])
sd = load_file(str(src / "model.safetensors"))
key = next(k for k in sd if "word_embeddings" in k)
keep = torch.zeros(sd[key].shape[0], dtype=torch.bool)
keep[sorted(ids)] = True
sd[key] = sd[key].clone()
sd[key][~keep] = 0
(dst / "model16.safetensors.gz").write_bytes(gzip.compress(save({k: v.half().contiguous() for k, v in sd.items()}), 6))
print(f"{len(ids)} token ids kept; wrote {dst}")
