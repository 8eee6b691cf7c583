"""Runs llama.cpp's quantizer (libllama's llama_model_quantize, through llama-cpp-python's ctypes) on a
list of jobs, in its own process so that an abort inside llama.cpp fails one test run, not pytest:

    python _llamacpp_quantize.py JOBS_JSON      JOBS_JSON = [[in, out, ftype, imatrix_path or null], ...]

With an importance matrix it does what llama-quantize's command line does: the matrix is loaded
(autoglm_gguf.imatrix.load_imatrix normalizes sums by counts exactly like its loader), passed as
llama_model_imatrix_data entries, and the four quantize.imatrix.* keys are set as overrides.
Exit status 0 when every job returned 0.
"""

import ctypes
import json
import sys

import llama_cpp

LLAMA_KV_OVERRIDE_TYPE_INT, LLAMA_KV_OVERRIDE_TYPE_STR = 0, 3


def _override(key: str, value) -> llama_cpp.llama_model_kv_override:
    o = llama_cpp.llama_model_kv_override()
    o.key = key.encode()
    if isinstance(value, str):
        o.tag = LLAMA_KV_OVERRIDE_TYPE_STR
        o.value.val_str = value.encode()[:127]
    else:
        o.tag = LLAMA_KV_OVERRIDE_TYPE_INT
        o.value.val_i64 = value
    return o


def run(src: str, dst: str, ftype: int, imatrix_path: str | None) -> int:
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = 2
    keep = []   # the ctypes buffers must outlive the call
    if imatrix_path:
        from autoglm_gguf.imatrix import load_imatrix

        im = load_imatrix(imatrix_path)
        entries = (llama_cpp.llama_model_imatrix_data * (len(im.entries) + 1))()
        for i, (name, values) in enumerate(im.entries.items()):
            buf = (ctypes.c_float * len(values))(*[float(v) for v in values])
            keep.append(buf)
            entries[i].name = name.encode()
            entries[i].data = ctypes.cast(buf, ctypes.POINTER(ctypes.c_float))
            entries[i].size = len(values)
        params.imatrix = ctypes.cast(entries, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
        kv = [("quantize.imatrix.file", imatrix_path)]
        if im.datasets:
            kv.append(("quantize.imatrix.dataset", im.datasets[0]))
        kv.append(("quantize.imatrix.entries_count", len(im.entries)))
        if im.chunk_count > 0:
            kv.append(("quantize.imatrix.chunks_count", im.chunk_count))
        overrides = (llama_cpp.llama_model_kv_override * (len(kv) + 1))(*[_override(k, v) for k, v in kv])
        overrides[len(kv)].key = b""
        params.kv_overrides = ctypes.cast(overrides, ctypes.POINTER(llama_cpp.llama_model_kv_override))
        keep += [entries, overrides]
    return llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))


def main() -> int:
    llama_cpp.llama_backend_init()
    failed = 0
    for src, dst, ftype, imatrix_path in json.loads(sys.argv[1]):
        rc = run(src, dst, ftype, imatrix_path)
        if rc != 0:
            print(f"llama_model_quantize({src} -> {dst}, ftype {ftype}) returned {rc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
