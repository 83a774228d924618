"""The report of `fewstep bench slo`: `slo.md` (every server at every load, the measured and the
predicted served adherence side by side, the targets' verdicts) and `slo.png`, from the figures of
`bench.slo_report.analyse`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.slo_report import PREDICTED, TARGET_CONTROLLER_OVER, TARGET_FIXED_OVER


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f}%"


def _ci(ci: list[float] | None, pct: bool = False, digits: int = 3) -> str:
    if not ci:
        return ""
    if pct:
        return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
    return f"[{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]" if ci[0] < 0 else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _ms(x: float | None) -> str:
    return "" if x is None else f"{1000 * x:.0f}"


def _figure(x: float | None, ci: list[float] | None, signed: bool = False) -> str:
    if x is None:
        return ""
    return f"{x:+.3f} {_ci(ci)}" if signed else f"{x:.3f} {_ci(ci)}"


def _predicted_too(t: dict[str, Any], x: float | None, ci: list[float] | None) -> str:
    """The predicted figure beside a measured one (nothing when the targets are on the prediction)."""
    return f" (predicted {_figure(x, ci, signed=True)})" if t["basis"] == "measured" and x is not None else ""


def _quality_note(a: dict[str, Any]) -> list[str]:
    if "scoring" not in a:
        return [
            f"**Served adherence is {PREDICTED}** (each answered request scores its serving model's row for its "
            "prompt class; the scoring pass was not run). Intervals: 95% block bootstrap over the trace, with the "
            "rows' own intervals drawn."
        ]
    st, ident = a["scoring"]["stats"], a["scoring"]["identity"]
    options = ", ".join(f"{n:,} on {o}" for o, n in st.get("by_option", {}).items())
    share = st.get("share", 1.0)
    which = (
        "every image a server answered with"
        if share >= 1
        else f"the images served for a seeded {100 * share:.0f}% of the requests (the same requests at every "
        "server and load, picked by a hash of prompt and seed; the measured figures and their intervals are over them)"
    )
    return [
        f"**Served adherence measured**: {which} was rendered after the run on its "
        f"serving model's bundle (`{ident['backend']}`, the service's pipeline; same prompt, seed, steps and "
        f"guidance) and scored by the evaluator (1 if the scene it reads back satisfies the prompt): "
        f"{st['images']:,} distinct images ({options}), shared by the servers and loads that served them. "
        "Beside it, the adherence **predicted** from the evaluation rows (each answered request scores its serving "
        "model's row for its prompt class), which the controller decides from. Intervals: 95% block bootstrap over "
        "the trace (the predicted ones with the rows' own intervals drawn); differences are paired, on the same "
        "resampled requests."
    ]


def _calibration(scoring: dict[str, Any]) -> list[str]:
    """The measured adherence of the distinct images served, per option and prompt class, beside the row."""
    lines = [
        "## Measured against the rows",
        "",
        "Each distinct served image once, whichever servers and loads served it; the row is the evaluation set's "
        "figure for the class (its 2,000 prompts).",
        "",
        "| option | class | images | measured | row |",
        "|---|---|---:|---:|---:|",
    ]
    for option, by_class in scoring["by_option"].items():
        for cls, r in by_class.items():
            row = "" if r["row"] is None else f"{r['row']:.3f}"
            lines.append(f"| {option} | {cls} | {r['images']:,} | {r['measured']:.3f} | {row} |")
    return [*lines, ""]


def markdown(doc: dict[str, Any]) -> str:
    cfg, a = doc["config"], doc["analysis"]
    if cfg.get("backend"):
        what = f"the bundles on {cfg['backend']} ({cfg.get('device') or 'cpu'}), measured"
        how = (
            f"The bundles served on `{cfg['backend']}` ({cfg.get('device') or 'cpu'}), the servers one after another "
            "on the device with the same trace"
        )
    else:
        what = f"{cfg['curve']} cost curve, simulated"
        how = (
            f"Simulated denoiser (`bench.sim_server`'s sleep of `{cfg['curve']}` per call, "
            f"dilation {cfg['dilation']:g}): the engine, batching and controller are the real ones, "
            "the compute is a sleep"
        )
    lines = [
        f"# Serving to a latency objective: `fewstep bench slo` ({what})",
        "",
        f"Objective p99 {cfg['objective_ms']:g} ms; {cfg['scheduling']}-level scheduling; the asked model "
        f"`{doc['asked']}` ({doc['capacity_images_per_s']:.1f} images/s at its max batch), "
        f"the cheapest `{doc['cheap']}`. "
        f"MMPP arrivals: bursts at {cfg['burst_ratio']:g}x the calm rate, {100 * cfg['burst_share']:.0f}% of the time, "
        f"{cfg['burst_s']:g} s long on average; {cfg['seconds']:g} s a load; one-object prompts "
        f"{100 * cfg['one_object_share']:.0f}%. {how}. Machine: " + str(doc["machine"].get("cpu")) + ".",
        "",
        *_quality_note(a),
        "",
        "Cost profile (ms per batch, curve time): "
        + "; ".join(
            f"{m}: "
            + ", ".join(f"{b}: {ms:.1f}" for b, ms in p["ms_per_batch"].items())
            + f" (max batch {p['max_batch_images']})"
            for m, p in doc["profile"].items()
        ),
        "",
    ]
    for entry in a["loads"]:
        lines += [
            f"## Load {entry['load']:g} ({entry['arrivals']} arrivals)",
            "",
            "| server | answered | 429 | over objective | p50 ms | p99 ms | adherence measured | predicted "
            "| downgraded: 1-obj / 2-obj | controller minus it: measured | predicted |",
            "|---|---:|---:|---|---:|---:|---|---|---|---|---|",
        ]
        for name, f in entry["servers"].items():
            bc = f["downgrades_by_class"]
            vs = entry["controller_vs"].get(name) or {}
            lines.append(
                f"| {name} | {f['answered']} | {f['rejected_429']} "
                f"| {_pct(f['over_share'])} {_ci(f['over_share_ci'], True)} "
                f"| {_ms(f['latency_s']['p50'])} | {_ms(f['latency_s']['p99'])} "
                f"| {_figure(f['measured'], f['measured_ci'])} | {_figure(f['adherence'], f['adherence_ci'])} "
                f"| {bc['one_object']['downgraded']}/{bc['one_object']['answered']} / "
                f"{bc['two_objects']['downgraded']}/{bc['two_objects']['answered']} "
                f"| {_figure(vs.get('measured_diff'), vs.get('measured_diff_ci'), signed=True)} "
                f"| {_figure(vs.get('adherence_diff'), vs.get('adherence_diff_ci'), signed=True)} |"
            )
        lines.append("")
    if "scoring" in a:
        lines += _calibration(a["scoring"])
    t = a["targets"]
    lines += ["## Targets", "", f"On the {t['basis']} served adherence.", ""]
    if "low_load_as_asked" in t:
        x = t["low_load_as_asked"]
        lines.append(
            f"- Low load ({x['load']:g}): the controller served {x['answered'] - x['downgraded']} of {x['answered']} "
            f"requests as asked: **{'holds' if x['holds'] else 'missed'}**."
        )
    rows = t["burst_load"]["rows"]
    if not rows:
        lines.append(
            f"- No load put fixed-8 over {100 * TARGET_FIXED_OVER:.0f}% of requests over the objective: not tested."
        )
    for i, r in enumerate(rows):
        which = "the target's load, the lowest where fixed-8 passes 10%" if i == 0 else "a higher load, beside it"
        lines.append(
            f"- Load {r['load']:g} ({which}): fixed-8 {_pct(r['fixed8_over'])} over; "
            f"controller {_pct(r['controller_over'])} "
            f"{_ci(r['controller_over_ci'], True)} (target < {100 * TARGET_CONTROLLER_OVER:.0f}%), adherence "
            f"{_figure(r['adherence_vs_fixed4'], r['adherence_vs_fixed4_ci'], signed=True)} over fixed-4"
            f"{_predicted_too(t, r['predicted_vs_fixed4'], r['predicted_vs_fixed4_ci'])}: "
            f"**{'holds' if r['holds'] else 'missed'}**."
        )
    for r in t["vs_static_rule"]["rows"]:
        rule = (
            " and ".join(f"{n} ({w:.2f})" for n, w in r["rules"].items())
            if len(r["rules"]) > 1
            else next(iter(r["rules"]))
        )
        if not r["traded"]:
            lines.append(f"- Load {r['load']:g}: neither the controller nor {rule} gave up any quality.")
            continue
        where = (
            f"every rule was over less often ({rule}: {_pct(r['rule_over'])}; controller {_pct(r['controller_over'])})"
            if r["controller_later"]
            else f"the static rule at the controller's {_pct(r['controller_over'])} over the objective ({rule})"
        )
        verdict = ("holds" if r["holds"] else "missed") + ("" if r["resolved"] else " (not resolved)")
        lines.append(
            f"- Load {r['load']:g}: against {where}: adherence "
            f"{_figure(r['adherence_diff'], r['adherence_diff_ci'], signed=True)}"
            f"{_predicted_too(t, r.get('predicted_diff'), r.get('predicted_diff_ci'))}: **{verdict}**."
        )
    silent = t["no_silent_downgrade"]
    verdict = "holds" if silent["holds"] else "missed: " + str(silent["problems"])
    lines.append(
        "- No silent downgrade: every downgrade in the replies is counted in `fewstep_routing_total`, and `best` "
        f"(fixed-8, fixed-4) was never moved: **{verdict}**."
    )
    return "\n".join(lines) + "\n"


def plot(doc: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = doc["analysis"]
    names = list(a["loads"][0]["servers"]) if a["loads"] else []
    loads = [e["load"] for e in a["loads"]]
    measured = a.get("basis") == "measured"
    key = "measured" if measured else "adherence"
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for name in names:
        over = [e["servers"][name]["over_share"] * 100 for e in a["loads"]]
        adh = [e["servers"][name][key] for e in a["loads"]]
        style = "-" if name.startswith("controller") else ("--" if name.startswith("fixed") else ":")
        axes[0].plot(loads, over, style, marker="o", label=name)
        lo = [e["servers"][name][f"{key}_ci"][0] for e in a["loads"]]
        hi = [e["servers"][name][f"{key}_ci"][1] for e in a["loads"]]
        axes[1].plot(loads, adh, style, marker="o", label=name)
        axes[1].fill_between(loads, lo, hi, alpha=0.12)
    axes[0].axhline(1.0, color="grey", lw=0.8)
    axes[0].set_ylim(bottom=0)
    axes[0].set(xlabel="mean load (share of the 8-step capacity)", ylabel="% of requests over the objective",
                title="Requests over the objective")  # fmt: skip
    axes[0].set_yscale("symlog", linthresh=1.0)
    title = "measured by the evaluator" if measured else "predicted from the evaluation rows"
    axes[1].set(xlabel="mean load (share of the 8-step capacity)", ylabel="mean adherence of served images",
                title=f"Served quality ({title})")  # fmt: skip
    axes[0].legend(fontsize=8)
    cfg = doc["config"]
    what = f"{cfg['backend']} (measured)" if cfg.get("backend") else f"{cfg['curve']} cost curve (simulated)"
    fig.suptitle(f"fewstep bench slo: {what}, objective {cfg['objective_ms']:g} ms")
    fig.tight_layout()
    path = out / "slo.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
