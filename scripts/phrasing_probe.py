"""Does the pretrained text encoder carry the held-out phrasings' words to the training words?

For every held-out word of `shapesworld.captions` (crimson, cobalt, pyramid, upper left, ...) this
embeds it with MiniLM (mean-pooled sentence embedding, the encoder's own similarity space), alone
and inside a short caption, and asks which training word of the same attribute is nearest. If the
encoder itself does not put "cobalt" nearest "blue", no denoiser trained only on training phrasings
can be expected to read it as blue: this bounds issue 15's held-out-phrasing goal.

    .venv/bin/python -m scripts.phrasing_probe      # writes results/phrasing_probe.md
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer

from distill.kit.text import bundled_minilm_dir
from shapesworld.captions import CELL_WORDS, COLOUR_WORDS, SHAPE_WORDS, SIZE_WORDS

TABLES = {"colour": COLOUR_WORDS, "shape": SHAPE_WORDS, "size": SIZE_WORDS, "position": CELL_WORDS}
CONTEXT = {
    "colour": "a {} circle",
    "shape": "a red {}",
    "size": "a {} red circle",
    "position": "a red circle in the {}",
}


def main(out: Path = Path("results/phrasing_probe.md")) -> tuple[int, int, int]:
    """Write the table to `out`; returns (right alone, right in context, held-out words)."""
    path = bundled_minilm_dir()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()

    def embed(texts: list[str]) -> torch.Tensor:
        b = tok(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            h = model(**b).last_hidden_state
        m = b["attention_mask"][..., None]
        return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)

    lines = [
        "# Held-out words against the training words, in MiniLM's own similarity space",
        "",
        "`python -m scripts.phrasing_probe`: for each held-out word, the nearest training word of the same "
        "attribute by cosine similarity of mean-pooled MiniLM embeddings, alone and in a short caption.",
        "",
        "| attribute | held-out word | means | nearest alone | nearest in context | right alone | right in context |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    right = {"alone": 0, "context": 0}
    total = 0
    for attr, table in TABLES.items():
        words = [(w, value) for value, (train, _) in table.items() for w in train]
        for value, (_, held) in table.items():
            for w in held:
                got = {}
                for mode in ("alone", "context"):
                    fmt = "{}" if mode == "alone" else CONTEXT[attr]
                    sims = (embed([fmt.format(w)]) @ embed([fmt.format(t) for t, _ in words]).T)[0]
                    j = int(sims.argmax())
                    got[mode] = (words[j][0], words[j][1] == value, float(sims[j]))
                    right[mode] += words[j][1] == value
                total += 1
                a, c = got["alone"], got["context"]
                lines.append(
                    f"| {attr} | {w} | {value} | {a[0]} ({a[2]:.2f}) | {c[0]} ({c[2]:.2f}) | "
                    f"{'yes' if a[1] else 'no'} | {'yes' if c[1] else 'no'} |"
                )
    lines += [
        "",
        f"Right alone: {right['alone']} of {total}; in context: {right['context']} of {total}.",
    ]
    out.write_text("\n".join(lines) + "\n")
    print(lines[-1])
    return right["alone"], right["context"], total


if __name__ == "__main__":
    main()
