"""scripts/first_image.sh against a stand-in repository whose `make serve` is a small HTTP server.

The real measurement clones this repository and installs and serves it (minutes; its figures are in
results/install/). Here the clone, the wait for the first image, the phase and size records and the
failure paths run for real, on a repository that serves a fake image after a known delay.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts/first_image.sh"

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("make", "git", "curl", "setsid")), reason="needs make, git, curl and setsid"
)

SERVER = """
import http.server, json, logging, os, time
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        reply = json.dumps({"model": "stand-in", "images": [{"b64": "iVBOR", "seed": body["seed"]}]}).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", int(os.environ["FEWSTEP_PORT"])), H)
logging.getLogger("service.app").info("ready (default model stand-in)")
server.serve_forever()
"""

MAKEFILE = """serve:
\tmkdir -p .venv-serve bundles/m && head -c 2000000 /dev/zero > .venv-serve/blob && touch .venv-serve/.installed-1
\tsleep {delay}
\ttouch bundles/m/manifest.json
\t{serve}
"""


def stand_in(tmp_path: Path, serve: str, delay: float = 1.0) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "server.py").write_text(SERVER)
    (repo / "Makefile").write_text(MAKEFILE.format(delay=delay, serve=serve))
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "stand-in"], check=True)
    return repo


def run_script(repo: Path, out: Path, runs: str = "cold", timeout_s: int = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "RUNS": runs, "OUT": str(out), "TIMEOUT_S": str(timeout_s)}
    return subprocess.run(["bash", str(SCRIPT), str(repo)], env=env, capture_output=True, text=True, timeout=120)


def test_a_run_records_time_to_first_image_phases_sizes_and_commit(tmp_path):
    repo = stand_in(tmp_path, "python3 server.py", delay=1.5)
    out = tmp_path / "first_image.json"
    done = run_script(repo, out, runs="cold warm")
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert doc["commit"] == head.strip()
    assert doc["machine"]["cores"] == os.cpu_count()
    assert set(doc["runs"]) == {"cold", "warm"}
    for row in doc["runs"].values():
        phases = row["phases_s_from_start"]
        assert row["seconds_to_first_image"] >= 1.5  # the make target sleeps that long before serving
        assert phases["clone"] <= phases["serve_venv"] <= phases["bundles"] <= phases["first_image"]
        assert phases["service_ready"] is not None and phases["service_ready"] <= phases["first_image"] + 1
        assert phases["export_venv"] is None  # this stand-in builds no export venv
        assert row["sizes_mb"]["venv-serve"] >= 2.0 and row["sizes_mb"]["venv-export"] is None
        assert row["torch_in_served_venv"] is False and row["served_from"] == ".venv-serve"
        assert row["served_model"] == "stand-in"
        assert row["cpu_seconds"] >= 0.1  # at least the stand-in server and the 2 MB write
    assert "first image after" in done.stdout
    table = out.with_suffix(".md").read_text()  # the same figures, as the table beside the JSON
    for name, row in doc["runs"].items():
        assert f"| {name} | {row['seconds_to_first_image']} | {row['cpu_seconds']} |" in table


def test_a_make_that_fails_stops_the_script_with_its_log(tmp_path):
    repo = stand_in(tmp_path, "echo 'no bundles here' >&2; exit 3", delay=0)
    out = tmp_path / "first_image.json"
    done = run_script(repo, out)
    assert done.returncode == 1
    assert "exited before an image" in done.stderr and "no bundles here" in done.stderr
    assert not out.exists()


def test_a_server_that_never_answers_times_out(tmp_path):
    repo = stand_in(tmp_path, "sleep 30", delay=0)
    done = run_script(repo, tmp_path / "x.json", timeout_s=3)
    assert done.returncode == 1 and "no image within 3 s" in done.stderr


def test_an_unknown_run_name_is_refused(tmp_path):
    done = run_script(tmp_path, tmp_path / "x.json", runs="lukewarm")
    assert done.returncode == 2 and "cold, packages or warm" in done.stderr
