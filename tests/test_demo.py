"""`autoglm-gguf demo`, the README's first command after the install: convert a random demo model, draw
screenshots, run the agent dry run with the grammar, write the trace."""

from __future__ import annotations

import re

from autoglm_gguf.cli import main


def test_demo_runs_the_whole_pipeline(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--dir", str(out), "--steps", "3", "-t", "2"]) == 0
    printed = capsys.readouterr().out
    assert "RANDOM-WEIGHT" in printed
    assert re.search(r"done: 3 step\(s\), 3 well-formed action\(s\)", printed), printed
    assert sorted(p.name for p in (out / "screens").glob("*.png")) == ["0.png", "1.png", "2.png"]
    assert (out / "tiny-glm4v-random-Q4_0.gguf").is_file() and (out / "mmproj-tiny-glm4v-random-F16.gguf").is_file()
    page = (out / "trace" / "index.html").read_text(encoding="utf-8")
    assert page.count("<section>") == 3 and page.count("data:image/png;base64,") == 3
    assert "of which grammar" in page
