import json
import os
import sys
import tarfile
import time

import torch

from distill.evaluation.evaluate import eval_set, generate, reference_images, score
from distill.evaluation.evaluator import load_evaluator
from distill.kit.checkpoint import load_denoiser, pack_model, read_state, resolve_checkpoint
from distill.kit.text import TextEncoder

out = os.environ["OUT"]
DEV = os.environ.get("DEV", "cuda")
evaluator, _ = load_evaluator("models/evaluator")
items = eval_set(int(sys.argv[1]))
ref = reference_images(items, 32)
rows = []
for name in sorted(os.listdir("/tmp/runs")):
    run = f"/tmp/runs/{name}"
    try:
        model, cfg = load_denoiser(run, device=DEV)
    except Exception as e:
        print(name, "no checkpoint", e)
        continue
    step = read_state(resolve_checkpoint(run))["step"]
    enc = TextEncoder(cfg.text, DEV)
    for w in (2.0, 3.0, 4.0, 5.0):
        t0 = time.time()
        images, _ = generate(model, enc, items, "ancestral", 64, w, batch_size=500, progress=False)
        s = score(evaluator, images, ref, items)
        row = {
            "name": name,
            "step": step,
            "w": w,
            "fd": s["fd"],
            "precision": s["precision"],
            "recall": s["recall"],
            **{k: s["adherence"][k] for k in ("overall", "one_object", "two_objects", "held_out")},
            "per_attribute": s["adherence"]["per_attribute"],
            "sec": round(time.time() - t0, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    pack_model(run, f"/tmp/packed/{name}", {"trained_on": torch.cuda.get_device_name() if DEV == "cuda" else "cpu"})
    with tarfile.open(f"{out}/{name}.tar", "w") as tf:
        tf.add(f"/tmp/packed/{name}", arcname=name)
        tf.add(f"{run}/metrics.jsonl", arcname=f"{name}/metrics.jsonl")
json.dump(rows, open(f"{out}/sweep.json", "w"), indent=1)
