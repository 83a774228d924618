"""bench.peer: the peer's request parsing, the pinned backend it gets, the ratios and the report;
the slow test stands LitServe up on a real bundle and compares its PNG with fewstep's own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.peer import PeerBenchConfig, job_from_body, markdown, peer_settings, ratios
from tests.defaults import student

K4 = student(4)  # the default 4-step student

ROOT = Path(__file__).resolve().parents[2]


def test_job_from_body_fills_defaults_and_names_bad_fields() -> None:
    job = job_from_body({"prompt": "a red circle", "seed": 7}, default_steps=4, default_guidance=3.0)
    assert (job.prompt, job.seed, job.steps, job.guidance) == ("a red circle", 7, 4, 3.0)
    job = job_from_body({"prompt": "x", "steps": 8, "guidance_scale": 1.5}, 4, 3.0)
    assert (job.steps, job.guidance, job.seed) == (8, 1.5, 0)
    with pytest.raises(ValueError, match="prompt"):
        job_from_body({"prompt": ""}, 4, 3.0)
    with pytest.raises(ValueError, match=r"^n:"):
        job_from_body({"prompt": "x", "n": 2}, 4, 3.0)


def test_the_peer_gets_the_path_fewstep_chose() -> None:
    assert peer_settings("auto:openvino-bf16") == {"kind": "openvino", "precision": "bf16"}
    assert peer_settings("auto:onnxruntime-fp32") == {"kind": "onnxruntime", "precision": "fp32"}
    assert peer_settings("onnxruntime") == {"kind": "onnxruntime", "precision": "auto"}
    with pytest.raises(ValueError):
        peer_settings("auto:nonsense-fp7")


def _rows() -> list[dict]:
    rows = []
    for r, (f32, p32, f1, p1) in enumerate(
        [(30.0, 25.0, 0.020, 0.025), (33.0, 26.0, 0.022, 0.021), (31, 24, 0.02, 0.03)]
    ):
        rows += [
            {
                "server": "fewstep",
                "round": r,
                "clients": 32,
                "images_per_s": f32,
                "p50_s": 0.5,
                "p99_s": 0.9,
                "non_200": 0,
            },
            {
                "server": "litserve",
                "round": r,
                "clients": 32,
                "images_per_s": p32,
                "p50_s": 0.6,
                "p99_s": 1.0,
                "non_200": 0,
            },
            {
                "server": "fewstep",
                "round": r,
                "clients": 1,
                "images_per_s": 40,
                "p50_s": f1,
                "p99_s": 0.03,
                "non_200": 0,
            },
            {
                "server": "litserve",
                "round": r,
                "clients": 1,
                "images_per_s": 35,
                "p50_s": p1,
                "p99_s": 0.04,
                "non_200": 1,
            },
        ]
    return rows


def test_ratios_are_medians_over_rounds() -> None:
    out = ratios(_rows(), (1, 32))
    assert out["images_per_s_32_clients"] == pytest.approx(31 / 25)
    assert out["p50_1_client"] == pytest.approx(0.020 / 0.025)
    assert ratios(_rows(), (32,)) == {"images_per_s_32_clients": pytest.approx(31 / 25)}


def test_markdown_reports_every_cell_and_the_targets() -> None:
    from dataclasses import asdict

    doc = {
        "config": asdict(PeerBenchConfig()),
        "rows": _rows(),
        "ratios": ratios(_rows(), (1, 32)),
        "fewstep_backend": "auto:openvino-bf16",
        "peer_settings": {"kind": "openvino", "precision": "bf16"},
        "litserve_version": "0.2.19",
        "machine": {"cpu": "test cpu", "cores": 2},
    }
    for row in doc["rows"]:
        row["server_cpu_ms_per_image"] = 20.0 if row["server"] == "fewstep" else 25.0
    doc["fewstep_profile"] = {"samples": 10, "by_category": {"denoiser (OpenVINO run)": 0.7, "metrics": 0.3}}
    text = markdown(doc)
    assert "| fewstep | 32 | 31.0 (30.0, 33.0, 31.0)" in text and "| 20.0 | 0 |" in text and "| 25.0 | 3 |" in text
    assert "| denoiser (OpenVINO run) | 70% |" in text
    assert "| litserve | 1 | 35.0" in text and "| 3 |" in text  # the non-200 count is summed
    assert "1.240 (target >= 1.05)" in text and "0.800 (target <= 1)" in text


@pytest.mark.slow
def test_the_peer_serves_the_same_png_as_fewstep(tmp_path: Path) -> None:
    """LitServe over the same pipeline answers the load generator's request with the image that
    `fewstep generate` makes for the same prompt, seed, steps and guidance (so the comparison is
    of serving layers on identical work)."""
    pytest.importorskip("litserve")
    from bench.load import Pool
    from bench.peer import PeerProcess
    from bench.server import ServerProcess

    bundle = ROOT / "bundles" / K4
    if not (bundle / "manifest.json").exists():
        pytest.skip(f"bundles/{K4} not built (make bundles)")
    expected = tmp_path / "expected.png"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "fewstep_cli",
            "generate",
            "a small blue square at the bottom",
            "--model",
            K4,
            "--bundles",
            str(ROOT / "bundles"),
            "--seed",
            "11",
            "--steps",
            "4",
            "--guidance",
            "3",
            "-o",
            str(expected),
        ],
        check=True,
        cwd=ROOT,
    )
    cfg = PeerBenchConfig(bundle=str(bundle), threads=1)
    import asyncio

    body = json.dumps({"prompt": "a small blue square at the bottom", "seed": 11, "steps": 4, "guidance_scale": 3})
    with PeerProcess(str(bundle), tmp_path / "peer.log", {"kind": "onnxruntime", "precision": "auto"}, cfg) as peer:
        assert isinstance(peer, ServerProcess)

        async def ask(payload: bytes):
            pool = Pool(peer.url)
            try:
                return await pool.request("POST", "/generate", payload, {"Accept": "image/png"})
            finally:
                pool.close()

        status, head, png = asyncio.run(ask(body.encode()))
        assert status == 200 and head["content-type"] == "image/png"
        assert png == expected.read_bytes()
        status, _, err = asyncio.run(ask(json.dumps({"prompt": "", "seed": 1}).encode()))
        assert status == 422 and b"prompt" in err
