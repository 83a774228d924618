import logging
import os
import sys
import time

from distill.kit.config import load_config
from distill.teacher.train import train

logging.basicConfig(level=logging.INFO)
name, *ov = sys.argv[1:]
cfg = load_config(os.environ.get("PRESET", "shapes32-cpu"), None, ["data.num_workers=3", "sample_every=100000", *ov])
t0 = time.time()
train(cfg, f"/tmp/runs/{name}", resume=True, progress=False)
print(name, "done", round(time.time() - t0, 1), "s", flush=True)
