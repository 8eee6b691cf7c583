// UTF-8 decoding, the code point classes of the GLM-4 pre-tokenizer, and the pre-tokenizer itself.
//
// The reference is HF tokenizers' Split pre-tokenizer with the GLM-4 regex (spec A.4; llama.cpp's
// CHATGLM4 pre-type), which tokenizers runs with Oniguruma:
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
// We do not embed a regex engine: glm4_pretokenize() is a hand-written matcher with the same
// leftmost-first alternation and greedy backtracking results (see unicode.cpp for the derivation).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace autoglm {

// The Unicode version of the class tables (must equal that of the Oniguruma in HF tokenizers).
const char * unicode_tables_version();

// The classes the regex distinguishes. They are disjoint: every code point is exactly one of them.
enum cp_class : uint8_t {
    CP_OTHER = 0,   // none of the below (punctuation, symbols, marks, controls, unassigned, invalid bytes)
    CP_LETTER = 1,  // \p{L}
    CP_NUMBER = 2,  // \p{N}
    CP_SPACE = 3,   // \s: U+0009..U+000D, U+0085, Zs, Zl, Zp
};
cp_class classify(uint32_t cp);

// Marks a byte that is not part of a valid UTF-8 sequence (never a real code point).
constexpr uint32_t CP_INVALID = 0xFFFFFFFFu;

// Decodes the UTF-8 sequence at s[pos] (pos < s.size()). Returns {code point, byte length}. A byte
// that does not start a valid, complete, shortest-form sequence of a scalar value (stray continuation,
// overlong form, surrogate, > U+10FFFF, truncated) is returned alone as {CP_INVALID, 1}; it classifies
// as CP_OTHER and its byte is kept as is, so byte-level tokenization still round-trips it.
std::pair<uint32_t, size_t> utf8_decode(std::string_view s, size_t pos);

// Appends the UTF-8 encoding of a scalar value to out.
void utf8_append(uint32_t cp, std::string & out);

// What a UTF-8 lead byte promises: the sequence length (0 for a byte that cannot start a multi-byte
// character, 1 for ASCII) and the valid range of the second byte (which excludes overlong forms,
// surrogates and code points above U+10FFFF).
struct utf8_lead {
    size_t len;
    unsigned char lo, hi;
};
utf8_lead utf8_lead_info(unsigned char b0);

// Splits text into GLM-4 pre-tokens: consecutive, non-empty byte ranges [first, second) covering all
// of text, appended to out.
void glm4_pretokenize(std::string_view text, std::vector<std::pair<size_t, size_t>> & out);

}  // namespace autoglm
