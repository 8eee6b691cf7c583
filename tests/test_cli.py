"""The autoglm-gguf command line: --version, info, the no-argument demo conversion."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from autoglm_gguf import _core
from autoglm_gguf.cli import main as cli_main


def run_cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autoglm_gguf.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_version_names_ggml_and_backends(capsys):
    assert cli_main(["--version"]) == 0
    out = capsys.readouterr().out
    assert f"ggml {_core.ggml_version()}" in out and _core.ggml_version() == "0.25.3"
    assert "backends: " in out and "CPU" in _core.backends()


def test_info_without_files_lists_the_devices(capsys):
    assert cli_main(["info"]) == 0
    out = capsys.readouterr().out
    for d in _core.devices():
        assert f"device {d['name']}: {d['description']} ({d['type']}, {d['backend']} backend" in out
    has_gpu = any(d["type"] in ("gpu", "igpu") for d in _core.devices())
    assert ("no GPU: this build runs on the CPU" in out) == (not has_gpu)
    assert cli_main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["backends"] == _core.backends() and [d["name"] for d in info["devices"]] == [d["name"] for d in _core.devices()]


def test_info_text_and_mmproj(tiny_checkpoint, convert_tiny, capsys):
    text, mmproj = convert_tiny(tiny_checkpoint, "q4_0", "f16")
    assert cli_main(["info", str(text), str(mmproj)]) == 0
    out = capsys.readouterr().out
    assert "architecture   glm4 (model)" in out and "architecture   clip (mmproj)" in out
    assert "projector      glm4v" in out and "Q4_0:" in out and "rope.dimension_sections" in out

    assert cli_main(["info", "--json", str(mmproj)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["projector_type"] == "glm4v" and info["tensor_count"] == 28
    assert info["tensor_types"] == {"F16": 17, "F32": 11}
    assert info["file_size"] == mmproj.stat().st_size


def test_info_on_a_non_gguf_file(tmp_path, capsys):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"not a gguf at all")
    assert cli_main(["info", str(bad)]) == 1
    assert "not a readable GGUF file" in capsys.readouterr().err
    assert cli_main(["info", str(tmp_path / "missing.gguf")]) == 1


def test_demo_conversion_without_arguments(tmp_path):
    proc = run_cli("convert", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "RANDOM-WEIGHT" in proc.stderr  # says plainly what it converted
    outputs = [line for line in proc.stdout.splitlines() if line.endswith(".gguf")]
    assert len(outputs) == 2
    assert run_cli("info", *outputs).returncode == 0
    assert run_cli("convert", cwd=tmp_path).returncode == 0, "the demo must be re-runnable"


def test_quiet_conversion_prints_only_paths(tiny_checkpoint, tmp_path):
    proc = run_cli("convert", str(tiny_checkpoint), "-o", str(tmp_path / "m.gguf"), "-q")
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.split() == [str(tmp_path / "m.gguf"), str(tmp_path / "mmproj-tiny-glm4v-F16.gguf")]


def test_progress_bar_on_stderr(tiny_checkpoint, tmp_path):
    proc = run_cli("convert", str(tiny_checkpoint), "-o", str(tmp_path / "m.gguf"), "--no-mmproj")
    assert proc.returncode == 0
    assert "tensors" in proc.stderr and "100%" in proc.stderr


@pytest.mark.parametrize("argv", [["convert", "/definitely/not/here"], ["info", "/definitely/not/here.gguf"]])
def test_errors_are_one_line_messages_not_tracebacks(argv):
    proc = run_cli(*argv)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "error:" in proc.stderr
