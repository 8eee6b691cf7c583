"""Runs llama.cpp's convert_hf_to_gguf.py (from the pinned sdist) on several argument lists in one
process: `python _llamacpp_convert.py LLAMA_CPP_DIR JOBS_JSON`, JOBS_JSON = [[arg, ...], ...].

The tiny test tokenizer is not one of the tokenizers llama.cpp recognizes by hash, so its
pre-tokenizer lookup is told that an unrecognized tokenizer is GLM-4's ("glm4"), which is what
the tiny tokenizer implements. Nothing else of the converter is changed.
"""

import json
import sys

llama_cpp_dir, jobs = sys.argv[1], json.loads(sys.argv[2])
sys.path.insert(0, llama_cpp_dir)

import conversion.base as base  # noqa: E402

_recognize = base.TextModel.get_vocab_base_pre


def _glm4_when_unrecognized(self, tokenizer):
    try:
        return _recognize(self, tokenizer)
    except NotImplementedError:
        return "glm4"


base.TextModel.get_vocab_base_pre = _glm4_when_unrecognized

import convert_hf_to_gguf  # noqa: E402

for args in jobs:
    sys.argv = ["convert_hf_to_gguf.py", *args]
    convert_hf_to_gguf.main()
