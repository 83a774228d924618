import logging
import os
import sys

from distill.methods.config import load_distill_config
from distill.methods.registry import distill
from distill.methods.runloop import RunOptions

logging.basicConfig(level=logging.INFO)
name, method, k, minutes, *extra = sys.argv[1:]
cfg = load_distill_config(
    os.environ.get("PRESET", "shapes32-gpu"),
    None,
    [f"method={method}", f"steps={k}", "batch_size=64", "iters=3000", "sample_every=100000", "ckpt_every=250", *extra],
)
print(
    distill(
        cfg,
        "models/teacher",
        f"{os.environ.get('DRUNS', '/tmp/druns')}/{name}",
        RunOptions(progress=False, max_seconds=60 * float(minutes), pack_unfinished=True),
    ),
    flush=True,
)
