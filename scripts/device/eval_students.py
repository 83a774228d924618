import json
import os
import sys
import tarfile
import time

from distill.evaluation.evaluate import eval_set, generate, reference_images, score
from distill.evaluation.evaluator import load_evaluator
from distill.kit.checkpoint import load_denoiser
from distill.kit.text import TextEncoder

out = os.environ["OUT"]
DEV = os.environ.get("DEV", "cuda")
WS = [float(x) for x in os.environ.get("WS", "3").split(",")]
evaluator, _ = load_evaluator("models/evaluator")
items = eval_set(int(sys.argv[1]))
ref = reference_images(items, 32)
rows = []
runs = sorted(d for d in os.listdir("/tmp/druns") if os.path.isdir(f"/tmp/druns/{d}/student"))
for r in runs:
    with tarfile.open(f"{out}/{r}.tar", "w") as tf:
        for f in ("student", "metrics.jsonl", "summary.json", "loss.png", "config.json"):
            if os.path.exists(f"/tmp/druns/{r}/{f}"):
                tf.add(f"/tmp/druns/{r}/{f}", arcname=f"{r}/{f}")
teacher, tcfg = load_denoiser("models/teacher", device=DEV)
enc = TextEncoder(tcfg.text, DEV)
jobs = [(r, f"/tmp/druns/{r}/student", int(r.split("-k")[1])) for r in runs] + [
    ("teacher-k4", "models/teacher", 4),
    ("teacher-k8", "models/teacher", 8),
]
for name, path, k in jobs:
    model, cfg = load_denoiser(path, device=DEV)
    for w in WS:
        t0 = time.time()
        images, nfe = generate(model, enc, items, "ancestral", k, w, batch_size=500, progress=False)
        s = score(evaluator, images, ref, items)
        row = {
            "name": name,
            "k": k,
            "w": w,
            "fd": s["fd"],
            "kid": s["kid"],
            "precision": s["precision"],
            "recall": s["recall"],
            "adherence": s["adherence"],
            "free_attribute_tv": s["free_attribute_tv"],
            "nfe": nfe / len(items),
            "sec": round(time.time() - t0, 1),
        }
        rows.append(row)
        json.dump(rows, open(f"{out}/students.json", "w"), indent=1)
        print(
            json.dumps({k2: row[k2] for k2 in ("name", "k", "w", "fd", "precision", "recall")}),
            json.dumps(row["adherence"]["two_objects"]),
            row["adherence"]["one_object"],
            flush=True,
        )
json.dump(rows, open(f"{out}/students.json", "w"), indent=1)
