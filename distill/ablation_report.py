"""`results/mm_ablation.md` from the runs of `scripts/mm_ablation.sh`: one row per short mm-alt run,
what it changed against the base settings, its updates and its evaluation figures, beside the
student's starting point (the teacher at w = 1 with the same 8 steps).

    python -m distill.ablation_report runs/ablation results/mm_ablation.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from distill.report import _fmt

SHOWN = ("batch_size", "lr", "aux_lr", "aux_steps", "weighting", "guidance_min", "guidance_max", "betas")


def _settings(run: Path) -> dict[str, Any]:
    cfg = json.loads((run / "config.json").read_text())
    return {k: cfg.get(k) for k in SHOWN}


def ablation_markdown(out: Path) -> str:
    rows = {p.stem: json.loads(p.read_text()) for p in sorted((out / "eval").glob("*.json"))}
    if "init" not in rows:
        raise FileNotFoundError(f"{out}/eval/init.json: the starting point row is missing")
    lines = [
        "| run | batch | lr (student / aux) | aux steps | weighting | w range | betas | updates | eval w | FD "
        "| adherence | 1 obj | 2 obj | precision | recall | bg TV |",
        "|" + " --- |" * 16,
    ]
    init = rows.pop("init")
    a = init["adherence"]
    lines.append(
        f"| start (teacher w = {init['guidance']:g}, 8 ancestral steps) | - | - | - | - | - | - | 0 | "
        f"{init['guidance']:g} | {_fmt(init['fd'])} | {_fmt(a['overall'])} | {_fmt(a['one_object'])} "
        f"| {_fmt(a['two_objects'])} | {_fmt(init['precision'])} | {_fmt(init['recall'])} "
        f"| {_fmt(init['free_attribute_tv'].get('background'))} |"
    )
    for name, r in rows.items():
        s = _settings(out / name)
        summary = json.loads((out / name / "summary.json").read_text())
        a = r["adherence"]
        lines.append(
            f"| {name} | {s['batch_size']} | {s['lr']:g} / {s['aux_lr'] or s['lr']:g} | {s['aux_steps']} "
            f"| {s['weighting']} | [{s['guidance_min']:g}, {s['guidance_max']:g}] | {tuple(s['betas'])} "
            f"| {summary['iters']} | {r['guidance']:g} | {_fmt(r['fd'])} | {_fmt(a['overall'])} "
            f"| {_fmt(a['one_object'])} | {_fmt(a['two_objects'])} | {_fmt(r['precision'])} | {_fmt(r['recall'])} "
            f"| {_fmt(r['free_attribute_tv'].get('background'))} |"
        )
    r0 = init
    head = (
        "# mm-alt ablation at K = 8\n\n"
        f"Each run: `fewstep distill --method mm-alt --steps 8` from `models/teacher`, 5 minutes on one CPU "
        f"thread (two runs side by side), then {r0['n_images']} images (eval seed {r0['eval_seed']}) with the "
        f"8-step ancestral sampler at the w shown. Machine: {r0['machine']}. Regenerate: "
        "`scripts/mm_ablation.sh`.\n\n"
    )
    return head + "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    out, md = Path(argv[0]), Path(argv[1])
    md.write_text(ablation_markdown(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
