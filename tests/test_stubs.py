"""The type stubs (_core.pyi) name exactly what the native module exports, so they cannot drift apart."""

import ast
from pathlib import Path

import autoglm_gguf
from autoglm_gguf import _core


def test_stub_names_match_the_module():
    stub = Path(autoglm_gguf.__file__).with_name("_core.pyi")
    tree = ast.parse(stub.read_text())
    declared = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    declared |= {t.id for n in tree.body if isinstance(n, ast.AnnAssign) for t in [n.target]}
    exported = {n for n in dir(_core) if not n.startswith("_")} | {"__version__"}
    assert declared - {"__version__"} == exported - {"__version__"}
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        members = {m.name for m in cls.body if isinstance(m, ast.FunctionDef) and not m.name.startswith("_")}
        members |= {m.target.id for m in cls.body if isinstance(m, ast.AnnAssign)}
        assert members <= set(dir(getattr(_core, cls.name))), cls.name
    assert (Path(autoglm_gguf.__file__).with_name("py.typed")).exists()
