"""A short, deterministic run of the project's fuzzer (fuzz/run.py): mutated text and mmproj GGUFs,
malformed images and API misuse, each case in a memory-capped child process. Every case must end
accepted or with a clean error: no crash, hang or blow-up. The long run is `python fuzz/run.py
--cases 10000`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_fuzz_smoke_run_has_no_findings(tmp_path):
    report = tmp_path / "fuzz.json"
    proc = subprocess.run([sys.executable, str(ROOT / "fuzz" / "run.py"), "--cases", "240", "--seed", "1",
                           "--jobs", "2", "--mem-mb", "2048", "--timeout", "60", "--json", str(report),
                           "--keep", str(tmp_path / "findings")],
                          capture_output=True, text=True, timeout=900)
    assert report.exists(), proc.stdout + proc.stderr
    r = json.loads(report.read_text())
    assert r["findings"] == [], json.dumps(r["findings"][:10], indent=1)
    outcomes = r["outcomes"]
    assert set(outcomes) == {"gguf-text", "gguf-mmproj", "image", "api"}
    assert sum(sum(v.values()) for v in outcomes.values()) == 240
    # the mutations must reach both sides: some inputs load, most are refused cleanly
    for kind in ("gguf-text", "gguf-mmproj", "image"):
        assert outcomes[kind].get("clean", 0) > 0, (kind, outcomes[kind])
    assert outcomes["gguf-text"].get("ok", 0) > 0
    assert proc.returncode == 0
