// UTF-8, code point classes and the GLM-4 pre-tokenizer (see unicode.h).
#include "unicode.h"

#include <algorithm>
#include <array>
#include <iterator>

namespace autoglm {

namespace {

struct cp_range {
    uint32_t first, last;
};

#include "unicode_tables.inc"

// Classification is on the hot path of encode(): the BMP (where nearly all text lives) gets a flat
// 64 KiB lookup table built once; the rarer supplementary planes use a binary search over ranges.
struct class_tables {
    std::array<uint8_t, 0x10000> bmp{};
    struct tagged_range {
        uint32_t first, last;
        cp_class cls;
    };
    std::vector<tagged_range> astral;  // sorted, disjoint

    class_tables() {
        add(k_letter_ranges, std::size(k_letter_ranges), CP_LETTER);
        add(k_number_ranges, std::size(k_number_ranges), CP_NUMBER);
        add(k_space_ranges, std::size(k_space_ranges), CP_SPACE);
        std::sort(astral.begin(), astral.end(), [](const tagged_range & a, const tagged_range & b) { return a.first < b.first; });
    }

    void add(const cp_range * rs, size_t n, cp_class cls) {
        for (size_t i = 0; i < n; ++i) {
            for (uint32_t cp = rs[i].first; cp <= rs[i].last && cp < 0x10000; ++cp) bmp[cp] = cls;
            if (rs[i].last >= 0x10000) astral.push_back({std::max<uint32_t>(rs[i].first, 0x10000), rs[i].last, cls});
        }
    }
};

const class_tables & tables() {
    static const class_tables t;  // thread-safe one-time initialisation (C++11 magic static)
    return t;
}

bool is_cont(unsigned char b) { return (b & 0xC0) == 0x80; }

}  // namespace

const char * unicode_tables_version() { return AUTOGLM_UNICODE_VERSION; }

cp_class classify(uint32_t cp) {
    const class_tables & t = tables();
    if (cp < 0x10000) return (cp_class) t.bmp[cp];
    if (cp > 0x10FFFF) return CP_OTHER;  // includes CP_INVALID
    auto it = std::upper_bound(t.astral.begin(), t.astral.end(), cp,
                               [](uint32_t v, const class_tables::tagged_range & r) { return v < r.first; });
    if (it == t.astral.begin()) return CP_OTHER;
    --it;
    return cp <= it->last ? it->cls : CP_OTHER;
}

std::pair<uint32_t, size_t> utf8_decode(std::string_view s, size_t pos) {
    const auto * p = (const unsigned char *) s.data() + pos;
    const size_t avail = s.size() - pos;
    const unsigned char b0 = p[0];
    if (b0 < 0x80) return {b0, 1};
    // Allowed range of the second byte per lead byte (RFC 3629 table): this rejects overlong forms,
    // UTF-16 surrogates and values above U+10FFFF in one place.
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;
    uint32_t cp;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        len = 2, cp = b0 & 0x1F;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        len = 3, cp = b0 & 0x0F;
        if (b0 == 0xE0) lo = 0xA0;
        if (b0 == 0xED) hi = 0x9F;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        len = 4, cp = b0 & 0x07;
        if (b0 == 0xF0) lo = 0x90;
        if (b0 == 0xF4) hi = 0x8F;
    } else {
        return {CP_INVALID, 1};
    }
    if (avail < len || p[1] < lo || p[1] > hi) return {CP_INVALID, 1};
    for (size_t k = 1; k < len; ++k) {
        if (!is_cont(p[k])) return {CP_INVALID, 1};
        cp = (cp << 6) | (p[k] & 0x3F);
    }
    return {cp, len};
}

void utf8_append(uint32_t cp, std::string & out) {
    if (cp < 0x80) {
        out += (char) cp;
    } else if (cp < 0x800) {
        out += (char) (0xC0 | (cp >> 6));
        out += (char) (0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += (char) (0xE0 | (cp >> 12));
        out += (char) (0x80 | ((cp >> 6) & 0x3F));
        out += (char) (0x80 | (cp & 0x3F));
    } else {
        out += (char) (0xF0 | (cp >> 18));
        out += (char) (0x80 | ((cp >> 12) & 0x3F));
        out += (char) (0x80 | ((cp >> 6) & 0x3F));
        out += (char) (0x80 | (cp & 0x3F));
    }
}

// The matcher. Oniguruma finds, from the current position, the first alternative (in pattern order)
// that matches there, with greedy quantifiers backtracking as needed. Every code point is a letter,
// number, space or other, and each class starts a non-empty match of some alternative, so matches
// are consecutive and never empty. Per alternative, at code point i:
//
//  1 (?i:'s|'t|'re|'ve|'m|'ll|'d)  ASCII case folding, plus U+017F LATIN SMALL LETTER LONG S, whose
//                                  case fold is 's' (measured against tokenizers: no other code point
//                                  folds into these letters, and multi-char folds such as U+FB06 'st'
//                                  do not match a prefix).
//  2 [^\r\n\p{L}\p{N}]?\p{L}+      one optional non-letter/number/CR/LF (space, tab, punctuation, ...)
//                                  glued to the following letter run.
//  3 \p{N}{1,3}                    numbers in groups of at most three, left to right.
//  4  ?[^\s\p{L}\p{N}]+[\r\n]*     an optional U+0020 glued to a run of "other", then CR/LF run.
//  5 \s*[\r\n]+                    if the whitespace run from i contains CR or LF: the greedy \s*
//                                  backs off to the last CR/LF of the run, so the match ends just after it.
//  6 \s+(?!\S)                     whole run at end of text; otherwise the run minus its last code
//                                  point (which then prefixes the next token), if that leaves >= 1.
//  7 \s+                           a single whitespace code point before a non-space.
void glm4_pretokenize(std::string_view text, std::vector<std::pair<size_t, size_t>> & out) {
    // Decode once: the matcher looks ahead over whole whitespace runs.
    std::vector<uint32_t> cps;
    std::vector<uint8_t> cls;
    std::vector<size_t> off;
    cps.reserve(text.size());
    cls.reserve(text.size());
    off.reserve(text.size() + 1);
    for (size_t pos = 0; pos < text.size();) {
        auto [cp, len] = utf8_decode(text, pos);
        cps.push_back(cp);
        cls.push_back(classify(cp));
        off.push_back(pos);
        pos += len;
    }
    off.push_back(text.size());
    const size_t n = cps.size();

    auto is_crlf = [&](size_t k) { return cps[k] == '\r' || cps[k] == '\n'; };
    auto fold = [&](size_t k) -> uint32_t {
        const uint32_t c = cps[k];
        if (c >= 'A' && c <= 'Z') return c + ('a' - 'A');
        return c == 0x17F ? 's' : c;
    };
    auto run_end = [&](size_t k, uint8_t c) {
        while (k < n && cls[k] == c) ++k;
        return k;
    };

    for (size_t i = 0; i < n;) {
        size_t end = 0;  // 0 = no alternative matched yet (a match always ends after i)
        const uint8_t c0 = cls[i];
        if (cps[i] == '\'' && i + 1 < n) {  // 1
            const uint32_t a = fold(i + 1);
            if (a == 's' || a == 't' || a == 'm' || a == 'd') {
                end = i + 2;
            } else if (i + 2 < n && (((a == 'r' || a == 'v') && fold(i + 2) == 'e') || (a == 'l' && fold(i + 2) == 'l'))) {
                end = i + 3;
            }
        }
        if (!end) {  // 2
            if (c0 == CP_LETTER) {
                end = run_end(i, CP_LETTER);
            } else if (c0 != CP_NUMBER && !is_crlf(i) && i + 1 < n && cls[i + 1] == CP_LETTER) {
                end = run_end(i + 1, CP_LETTER);
            }
        }
        if (!end && c0 == CP_NUMBER) {  // 3
            end = std::min(run_end(i, CP_NUMBER), i + 3);
        }
        if (!end) {  // 4
            const size_t j = (cps[i] == ' ' && i + 1 < n && cls[i + 1] == CP_OTHER) ? i + 1 : i;
            if (cls[j] == CP_OTHER) {
                end = run_end(j, CP_OTHER);
                while (end < n && is_crlf(end)) ++end;
            }
        }
        if (!end) {  // 5, 6, 7: c0 is CP_SPACE here
            size_t j = i, last_crlf = n;
            for (; j < n && cls[j] == CP_SPACE; ++j) {
                if (is_crlf(j)) last_crlf = j;
            }
            if (last_crlf != n) {
                end = last_crlf + 1;
            } else if (j == n || j - i == 1) {
                end = j;
            } else {
                end = j - 1;
            }
        }
        out.emplace_back(off[i], off[end]);
        i = end;
    }
}

utf8_lead utf8_lead_info(unsigned char b0) {
    if (b0 < 0x80) return {1, 0x80, 0xBF};
    if (b0 >= 0xC2 && b0 <= 0xDF) return {2, 0x80, 0xBF};
    if (b0 >= 0xE0 && b0 <= 0xEF)
        return {3, (unsigned char) (b0 == 0xE0 ? 0xA0 : 0x80), (unsigned char) (b0 == 0xED ? 0x9F : 0xBF)};
    if (b0 >= 0xF0 && b0 <= 0xF4)
        return {4, (unsigned char) (b0 == 0xF0 ? 0x90 : 0x80), (unsigned char) (b0 == 0xF4 ? 0x8F : 0xBF)};
    return {0, 0, 0};
}

}  // namespace autoglm
