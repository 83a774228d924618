"""On a lent GPU: train teacher variants side by side for an equal wall time, score, pack, parity.

    python scripts/device/teacher.py train NAME [key=value ...]   # one variant (run in parallel)
    python scripts/device/teacher.py finish NAME [NAME ...]       # score, pack, pick, parity reference

`train` warm-starts from `START_TEACHER` (default: the composing teacher, `models/teacher-compose`) and
sizes its run to the time it is given: it trains `PROBE_STEPS` steps on a provisional schedule,
reads the measured steps per second (both variants already running side by side), and resumes
with `steps` set so that the cosine decay ends when the time box `TRAIN_S` (counted from
`T_START`) runs out. Only `steps` changes on that resume (`distill.teacher.train`: exact resume), so the
run is an ordinary `fewstep train` run of the resulting config.

`finish` scores every variant and the starting teacher on the first `EVAL_N` prompts of the
evaluation set (16 ancestral steps, w = 3, the service's teacher setting), packs each variant,
picks the one with the highest two-object adherence, and samples fixed prompts with it in fp32
(TF32 off) for the CPU parity test (`tests/distill/test_teacher_parity.py`). Everything lands in
$OUT as it is made, so a call cut short keeps what finished.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import torch

from distill.kit.checkpoint import load_denoiser, pack_model, read_state, resolve_checkpoint
from distill.kit.config import load_config
from distill.teacher.train import train

RUNS = Path(os.environ.get("RUNS", "/tmp/truns"))
OUT = Path(os.environ.get("OUT", "/tmp/out"))
DEV = os.environ.get("DEV", "cuda")
START = os.environ.get("START_TEACHER", "models/teacher-compose")
PROBE_STEPS = int(os.environ.get("PROBE_STEPS", "300"))
PARITY_PROMPTS = 8
PARITY_STEPS = 16
PARITY_W = 3.0

log = logging.getLogger("teacher")


def _config(overrides: list[str]):
    base = [
        f"init_from={json.dumps(START)}",
        f"device={json.dumps(DEV)}",
        f"data.num_workers={os.environ.get('WORKERS', '6')}",
        f"log_every={min(50, PROBE_STEPS)}",
        "ckpt_every=500",  # a run cut short by the time box keeps all but the last few seconds
        "sample_every=1000000",
    ]
    return load_config("shapes32-compose", None, [*base, *overrides])


def cmd_train(name: str, overrides: list[str]) -> None:
    t_start = float(os.environ.get("T_START", time.time()))
    budget = float(os.environ["TRAIN_S"])
    out = RUNS / name
    cfg = _config(["steps=1000000", *overrides])
    train(cfg, out, resume=True, progress=False, stop_at=PROBE_STEPS)
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines() if r]
    rate = rows[-1]["it_s"]  # the last window: warm, with every variant running
    left = budget - (time.time() - t_start) - 15  # the resume's start and the final checkpoint
    steps = PROBE_STEPS + max(0, int(0.92 * rate * left))  # the rate wobbles; end inside the box
    log.info("%s: %.1f steps/s measured; %.0f s left -> steps=%d", name, rate, left, steps)
    cfg = _config([f"steps={steps}", *overrides])
    summary = train(cfg, out, resume=True, progress=False)
    log.info("%s done: %s", name, json.dumps({k: summary[k] for k in ("steps", "final_loss", "wall_s")}))


def _score(path: str, n: int) -> dict:
    from distill.evaluation.evaluate import eval_set, generate, reference_images, score
    from distill.evaluation.evaluator import load_evaluator
    from distill.kit.text import TextEncoder

    evaluator, _ = load_evaluator("models/evaluator")
    items = eval_set(n)
    ref = reference_images(items, 32)
    model, cfg = load_denoiser(path, device=DEV)
    enc = TextEncoder(cfg.text, DEV)
    t0 = time.time()
    images, nfe = generate(model, enc, items, "ancestral", 16, 3.0, batch_size=500, progress=False)
    s = score(evaluator, images, ref, items, resamples=int(os.environ.get("RESAMPLES", "300")))
    a, ci = s["adherence"], s.get("adherence_ci", {})
    return {
        "fd": s["fd"],
        "fd_ci": s.get("fd_ci"),
        "adherence": a,
        "adherence_ci": ci,
        "nfe_per_image": nfe / len(items),
        "sec": round(time.time() - t0, 1),
    }


def _parity(path: str) -> None:
    """fp32 samples of fixed prompts and seeds: the CPU must draw the same images from these weights."""
    import shapesworld as shapes
    from distill.kit.data import to_uint8
    from distill.kit.guidance import GuidedDenoiser, encode_cond
    from distill.kit.text import TextEncoder
    from fewstep.bundle import sha256_file
    from fewstep.rng import SeededNoise
    from fewstep.sampler import ancestral_sample

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model, cfg = load_denoiser(path, device=DEV)
    enc = TextEncoder(cfg.text, DEV)
    captions = [shapes.EXAMPLE_PROMPTS[i % len(shapes.EXAMPLE_PROMPTS)] for i in range(PARITY_PROMPTS)]
    seeds = list(range(100, 100 + PARITY_PROMPTS))
    noise = SeededNoise(seeds, (cfg.model.in_channels, cfg.model.resolution, cfg.model.resolution))
    with torch.inference_mode():
        x = ancestral_sample(
            GuidedDenoiser(model), PARITY_STEPS, encode_cond(enc, captions), PARITY_W, noise, torch.zeros(1, device=DEV)
        )
    np.savez_compressed(
        OUT / "parity.npz",
        images=to_uint8(x),
        captions=np.array(captions),
        seeds=np.array(seeds),
        steps=PARITY_STEPS,
        guidance=PARITY_W,
        model_sha256=sha256_file(Path(path) / "model.safetensors"),
        device=torch.cuda.get_device_name() if DEV == "cuda" else "cpu",
    )


def cmd_finish(names: list[str]) -> None:
    n = int(os.environ.get("EVAL_N", "2000"))
    device = torch.cuda.get_device_name() if DEV == "cuda" else "cpu"
    rows: dict[str, dict] = {}

    def dump() -> None:
        (OUT / "teacher_eval.json").write_text(json.dumps(rows, indent=1))

    for name in names:
        run = RUNS / name
        try:
            ckpt = resolve_checkpoint(run)
        except FileNotFoundError as e:
            log.error("%s: no checkpoint (%s)", name, e)
            continue
        state = read_state(ckpt)
        summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else None
        packed = pack_model(run, RUNS / "packed" / name, {"trained_on": device, "training": summary})
        metrics = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines() if r]
        with tarfile.open(OUT / f"{name}.tar", "w") as tf:
            tf.add(packed, arcname=name)
            for f in ("metrics.jsonl", "summary.json", "config.json", "loss.png", "samples"):
                if (run / f).exists():
                    tf.add(run / f, arcname=f"{name}/run/{f}")
        rows[name] = {
            "step": state["step"],
            "wall_s": state["extra"].get("wall_s"),
            "final_loss": metrics[-1]["loss"] if metrics else None,
            "batch_size": state["config"]["batch_size"],
            "lr": state["config"]["optim"]["lr"],
            **_score(str(packed), n),
        }
        dump()
        log.info("%s: %s", name, json.dumps({k: rows[name][k] for k in ("step", "fd", "sec")}))
        log.info("%s adherence: %s", name, json.dumps(rows[name]["adherence"]))
    rows["start"] = _score(START, n)
    dump()
    log.info("start adherence: %s", json.dumps(rows["start"]["adherence"]))
    trained = [k for k in rows if k != "start"]
    if trained:
        best = max(trained, key=lambda k: (rows[k]["adherence"]["two_objects"], rows[k]["adherence"]["overall"]))
        rows["chosen"] = {"name": best}
        dump()
        _parity(str(RUNS / "packed" / best))
        log.info("chosen %s; parity reference written", best)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    OUT.mkdir(parents=True, exist_ok=True)
    verb, *args = sys.argv[1:]
    if verb == "train":
        cmd_train(args[0], args[1:])
    elif verb == "finish":
        cmd_finish(args)
    else:
        raise SystemExit(f"unknown verb {verb!r}: train or finish")


if __name__ == "__main__":
    main()
