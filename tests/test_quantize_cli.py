"""`autoglm-gguf quantize` as a user meets it: clear errors, no partial files, the menu and --dry-run."""

from __future__ import annotations

import gguf
import pytest

from autoglm_gguf.cli import main
from autoglm_gguf.errors import ConversionError
from autoglm_gguf.quantize import quantize_gguf


@pytest.fixture(scope="module")
def f16(tmp_path_factory):
    """256 wide (K-quant and IQ blocks fit) with an FFN of 320 (ffn_down rows fall back)."""
    from autoglm_gguf._tiny.checkpoint import make_config, write_checkpoint
    from autoglm_gguf.convert import ConvertOptions, convert_checkpoint

    d = tmp_path_factory.mktemp("qcli")
    cfg = make_config(text={"hidden_size": 256, "intermediate_size": 320, "num_attention_heads": 8,
                            "num_key_value_heads": 2, "rope_parameters": {"mrope_section": [2, 3, 3]}})
    ckpt = write_checkpoint(d / "w256", cfg, dtype="f32", seed=4)
    convert_checkpoint(ckpt, ConvertOptions(outfile=d / "w256-f16.gguf", outtype="f16", mmproj=False, progress=False))
    return d / "w256-f16.gguf"


def _leftovers(d):
    return sorted(p.name for p in d.iterdir())


def test_cli_writes_the_preset_and_reports_the_mix(f16, tmp_path, capsys):
    out = tmp_path / "m-q4_k_m.gguf"
    assert main(["quantize", str(f16), str(out), "Q4_K_M"]) == 0
    err = capsys.readouterr().err
    assert "wrote" in err and "fell back" in err       # ffn_down's 320-long rows cannot hold 256-blocks
    r = gguf.GGUFReader(out)
    assert r.fields["general.file_type"].contents() == 15
    Q = gguf.GGMLQuantizationType
    assert {t.tensor_type for t in r.tensors} >= {Q.Q4_K, Q.Q6_K, Q.F32}


def test_errors_leave_no_file(f16, tmp_path, capsys):
    out = tmp_path / "x.gguf"
    assert main(["quantize", str(f16), str(out), "q9_z"]) == 1
    assert "unknown quantization type" in capsys.readouterr().err
    assert main(["quantize", str(f16), str(out), "iq2_xxs"]) == 1
    err = capsys.readouterr().err
    assert "needs an importance matrix" in err and "--imatrix" in err
    assert main(["quantize", str(tmp_path / "missing.gguf"), str(out), "q4_k_m"]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["quantize", str(f16), str(out), "q4_k_m", "--imatrix", str(tmp_path / "none.gguf")]) == 1
    assert "make one with `autoglm-gguf imatrix`" in capsys.readouterr().err
    assert _leftovers(tmp_path) == []


def test_quantized_input_and_existing_output_are_refused(f16, tmp_path):
    q = tmp_path / "q.gguf"
    quantize_gguf(f16, q, "q8_0", progress=False)
    with pytest.raises(ConversionError, match="loses quality twice"):
        quantize_gguf(q, tmp_path / "qq.gguf", "q4_k_m", progress=False)
    with pytest.raises(ConversionError, match="already exists"):
        quantize_gguf(f16, q, "q4_k_m", progress=False)
    quantize_gguf(f16, q, "q4_k_m", progress=False, force=True)
    assert gguf.GGUFReader(q).fields["general.file_type"].contents() == 15
    assert _leftovers(tmp_path) == ["q.gguf"]


def test_dry_run_size_is_the_written_size(f16, tmp_path):
    planned = quantize_gguf(f16, tmp_path / "d.gguf", "q3_k_m", dry_run=True)
    assert not (tmp_path / "d.gguf").exists()
    real = quantize_gguf(f16, tmp_path / "d.gguf", "q3_k_m", progress=False)
    data = sum(int(t.n_bytes) for t in gguf.GGUFReader(tmp_path / "d.gguf").tensors)
    assert planned.bytes == data and planned.types == real.types


def test_interrupt_leaves_no_file(f16, tmp_path, monkeypatch):
    from autoglm_gguf import _core

    real = _core.requantize

    def interrupted(*args):
        def on_tensor(i, done):
            if i == 3:
                raise KeyboardInterrupt
        return real(*args[:6], on_tensor)

    monkeypatch.setattr("autoglm_gguf.quantize._core.requantize", interrupted)
    with pytest.raises(KeyboardInterrupt):
        quantize_gguf(f16, tmp_path / "i.gguf", "q4_k_m", progress=False)
    assert _leftovers(tmp_path) == []
