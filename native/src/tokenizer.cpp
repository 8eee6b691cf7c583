// GLM-4 byte-level BPE tokenizer (see tokenizer.h). Behaviour follows HF tokenizers for GLM-4's
// tokenizer.json: added tokens split out first (leftmost-longest, like its Aho-Corasick matcher), then
// per segment the GLM-4 Split pre-tokenizer (unicode.cpp), ByteLevel mapping and BPE by merge rank.
#include "tokenizer.h"

#include <algorithm>
#include <cstdio>

#include "error.h"
#include "unicode.h"

namespace autoglm {

namespace {

// GPT-2's bytes_to_unicode(): the printable Latin-1 bytes stand for themselves, the other 68 bytes
// (controls, space, DEL, NBSP, soft hyphen) are moved to U+0100 onwards in byte order, so every byte
// has a visible, non-space character. Tokens and merges are written in these characters.
struct byte_map {
    uint32_t to_cp[256];
    int16_t to_byte[0x144];  // U+0000..U+0143 -> byte, or -1 (U+0143 = 0x100 + 67 is the last one used)

    byte_map() {
        std::fill(std::begin(to_byte), std::end(to_byte), (int16_t) -1);
        uint32_t next = 0x100;
        for (uint32_t b = 0; b < 256; ++b) {
            const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
            to_cp[b] = printable ? b : next++;
            to_byte[to_cp[b]] = (int16_t) b;
        }
    }
};

const byte_map & bmap() {
    static const byte_map m;
    return m;
}

// The raw bytes a byte-level token string stands for; false if it is not one (a character outside the
// 256 used). HF's ByteLevel decoder then emits the token's own UTF-8 text, and so do we.
bool byte_level_to_bytes(const std::string & text, std::string & out) {
    const byte_map & m = bmap();
    out.clear();
    for (size_t pos = 0; pos < text.size();) {
        auto [cp, len] = utf8_decode(text, pos);
        if (cp >= std::size(m.to_byte) || m.to_byte[cp] < 0) return false;
        out += (char) m.to_byte[cp];
        pos += len;
    }
    return true;
}

std::string quoted(const std::string & s) {
    std::string q = "'";
    for (unsigned char c : s) {
        if (c < 0x20 || c == 0x7F) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            q += buf;
        } else {
            q += (char) c;
        }
    }
    return q + "'";
}

bool is_added(int32_t type) { return type == TOKEN_CONTROL || type == TOKEN_USER_DEFINED; }

}  // namespace

tokenizer::tokenizer(vocab_data data)
    : tokens_(std::move(data.tokens)), types_(std::move(data.types)), ignore_merges_(data.ignore_merges) {
    const size_t n = tokens_.size();
    if (n == 0) throw error("tokenizer: the vocabulary is empty (tokenizer.ggml.tokens)");
    if (n > (size_t) INT32_MAX) throw error("tokenizer: vocabulary too large: " + std::to_string(n) + " tokens");
    if (types_.size() != n) {
        throw error("tokenizer: " + std::to_string(n) + " tokens but " + std::to_string(types_.size()) +
                    " token types (tokenizer.ggml.tokens and tokenizer.ggml.token_type must have the same length)");
    }

    // Per token: its bytes, and the lookup maps. Added tokens and UNUSED placeholders are not part of the
    // BPE model, so merges and ignore_merges look only at the others (HF keeps added tokens apart too).
    std::unordered_map<std::string_view, int32_t> model_text_to_id;
    bytes_.resize(n);
    token_to_id_.reserve(n);
    word_to_id_.reserve(n);
    model_text_to_id.reserve(n);
    for (int32_t id = 0; id < (int32_t) n; ++id) {
        const int32_t t = types_[id];
        const std::string & text = tokens_[id];
        if (t < TOKEN_NORMAL || t > TOKEN_BYTE) {
            throw error("tokenizer: token " + std::to_string(id) + " " + quoted(text) + " has type " + std::to_string(t) +
                        ", expected 1..6 (normal, unknown, control, user-defined, unused, byte)");
        }
        token_to_id_.emplace(text, id);
        if (t == TOKEN_UNUSED) continue;  // "[PAD123]": stands for nothing
        if (is_added(t)) {
            bytes_[id] = text;
            if (!text.empty()) specials_.emplace_back(text, id);
            continue;
        }
        if (!byte_level_to_bytes(text, bytes_[id])) bytes_[id] = text;
        model_text_to_id.emplace(tokens_[id], id);
        word_to_id_.emplace(bytes_[id], id);
    }

    // Every byte needs its single-byte token, or some text could not be encoded at all.
    for (int b = 0; b < 256; ++b) {
        std::string sym;
        utf8_append(bmap().to_cp[b], sym);
        auto it = model_text_to_id.find(sym);
        if (it == model_text_to_id.end()) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "0x%02X", b);
            throw error("tokenizer: not a byte-level BPE vocabulary: no normal token " + quoted(sym) + " for byte " + buf);
        }
        byte_token_[b] = it->second;
    }

    merges_.reserve(data.merges.size());
    for (size_t r = 0; r < data.merges.size(); ++r) {
        const std::string & m = data.merges[r];
        // Parts never contain a space (byte-level maps it to U+0120); searching from 1 also accepts a
        // part that is a literal space, as llama.cpp does.
        const size_t sp = m.find(' ', 1);
        auto where = [&] { return "tokenizer: merge " + std::to_string(r) + " " + quoted(m); };
        if (sp == std::string::npos || sp + 1 >= m.size()) throw error(where() + " is not of the form 'left right'");
        const std::string_view left(m.data(), sp), right(m.data() + sp + 1, m.size() - sp - 1);
        const std::string joined = std::string(left) + std::string(right);
        int32_t ids[3];
        const std::string_view parts[3] = {left, right, joined};
        for (int k = 0; k < 3; ++k) {
            auto it = model_text_to_id.find(parts[k]);
            if (it == model_text_to_id.end()) {
                throw error(where() + ": " + quoted(std::string(parts[k])) + " is not a token of the BPE vocabulary");
            }
            ids[k] = it->second;
        }
        // A repeated pair keeps its first (best) rank, as llama.cpp does.
        merges_.emplace(((uint64_t) (uint32_t) ids[0] << 32) | (uint32_t) ids[1], merge_result{(int32_t) r, ids[2]});
    }

    // Leftmost-longest matching tries, at each byte, the added tokens starting with that byte from the
    // longest down. The same text twice keeps the lower id (the stable sort keeps ids in order).
    std::stable_sort(specials_.begin(), specials_.end(), [](const auto & a, const auto & b) {
        return a.first.size() != b.first.size() ? a.first.size() > b.first.size() : a.first < b.first;
    });
    specials_.erase(
        std::unique(specials_.begin(), specials_.end(), [](const auto & a, const auto & b) { return a.first == b.first; }),
        specials_.end());
    for (uint32_t i = 0; i < specials_.size(); ++i) specials_by_byte_[(unsigned char) specials_[i].first[0]].push_back(i);
}

struct tokenizer::bpe_scratch {
    struct symbol {
        int32_t id;          // -1 once merged into its left neighbour
        int32_t prev, next;  // neighbours in the current segmentation, -1 at the ends
    };
    struct candidate {
        int32_t rank, pos, left, right, result;
        // std heaps are max-heaps: "less" means worse, i.e. higher rank, then further right.
        bool operator<(const candidate & o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::vector<symbol> syms;
    std::vector<candidate> heap;
    std::vector<std::pair<size_t, size_t>> pieces;
};

// Standard BPE: repeatedly merge the adjacent pair with the lowest merge rank (leftmost on ties) until
// no pair has a merge. Symbols start as single bytes at their byte offsets; a heap of candidate pairs
// makes this O(n log n). A candidate is stale when either side has changed since it was pushed: the
// ids it recorded no longer sit at its position and the next one.
void tokenizer::bpe(std::string_view word, bpe_scratch & s, std::vector<int32_t> & out) const {
    const size_t n = word.size();
    if (n == 1) {
        out.push_back(byte_token_[(unsigned char) word[0]]);
        return;
    }
    if (ignore_merges_) {
        auto it = word_to_id_.find(std::string(word));
        if (it != word_to_id_.end()) {
            out.push_back(it->second);
            return;
        }
    }
    auto & syms = s.syms;
    auto & heap = s.heap;
    syms.resize(n);
    heap.clear();
    for (size_t i = 0; i < n; ++i) {
        syms[i] = {byte_token_[(unsigned char) word[i]], (int32_t) i - 1, i + 1 < n ? (int32_t) i + 1 : -1};
    }
    auto push = [&](int32_t pos) {
        const int32_t nx = syms[pos].next;
        if (nx < 0) return;
        auto it = merges_.find(((uint64_t) (uint32_t) syms[pos].id << 32) | (uint32_t) syms[nx].id);
        if (it == merges_.end()) return;
        heap.push_back({it->second.rank, pos, syms[pos].id, syms[nx].id, it->second.result});
        std::push_heap(heap.begin(), heap.end());
    };
    for (size_t i = 0; i + 1 < n; ++i) push((int32_t) i);
    while (!heap.empty()) {
        std::pop_heap(heap.begin(), heap.end());
        const bpe_scratch::candidate c = heap.back();
        heap.pop_back();
        auto & l = syms[c.pos];
        if (l.id != c.left || l.next < 0 || syms[l.next].id != c.right) continue;  // stale
        auto & r = syms[l.next];
        l.id = c.result;
        r.id = -1;
        l.next = r.next;
        if (r.next >= 0) syms[r.next].prev = c.pos;
        if (l.prev >= 0) push(l.prev);
        push(c.pos);
    }
    for (int32_t i = 0; i >= 0; i = syms[i].next) out.push_back(syms[i].id);
}

void tokenizer::encode_text(std::string_view text, std::vector<int32_t> & out) const {
    if (text.empty()) return;
    bpe_scratch s;
    glm4_pretokenize(text, s.pieces);
    for (const auto & [a, b] : s.pieces) bpe(text.substr(a, b - a), s, out);
}

std::vector<int32_t> tokenizer::encode(std::string_view text, bool parse_special) const {
    std::vector<int32_t> out;
    out.reserve(text.size() / 3 + 1);
    if (!parse_special || specials_.empty()) {
        encode_text(text, out);
        return out;
    }
    // Added tokens are matched on the raw text before pre-tokenization (GLM's are all normalized=false,
    // lstrip/rstrip=false, single_word=false: a plain split). An added token's first byte is ASCII or a
    // UTF-8 lead byte, so a byte-wise scan never matches inside a character.
    size_t start = 0;
    for (size_t i = 0; i < text.size();) {
        int32_t hit = -1;
        for (uint32_t k : specials_by_byte_[(unsigned char) text[i]]) {
            const std::string & t = specials_[k].first;
            if (text.compare(i, t.size(), t) == 0) {
                hit = (int32_t) k;
                break;  // longest first
            }
        }
        if (hit < 0) {
            ++i;
            continue;
        }
        encode_text(text.substr(start, i - start), out);
        out.push_back(specials_[hit].second);
        i += specials_[hit].first.size();
        start = i;
    }
    encode_text(text.substr(start), out);
    return out;
}

std::string tokenizer::token_bytes(int32_t id) const {
    if (id < 0 || id >= n_vocab()) {
        throw invalid_argument("token id " + std::to_string(id) + " is out of range [0, " + std::to_string(n_vocab()) + ")");
    }
    return bytes_[id];
}

std::string tokenizer::decode(const std::vector<int32_t> & ids) const {
    std::string out;
    for (size_t i = 0; i < ids.size(); ++i) {
        const int32_t id = ids[i];
        if (id < 0 || id >= n_vocab()) {
            throw invalid_argument("decode: token id " + std::to_string(id) + " at position " + std::to_string(i) +
                                   " is out of range [0, " + std::to_string(n_vocab()) + ")");
        }
        out += bytes_[id];
    }
    return out;
}

int32_t tokenizer::find(std::string_view token_text) const {
    auto it = token_to_id_.find(std::string(token_text));
    return it == token_to_id_.end() ? -1 : it->second;
}

int32_t tokenizer::type(int32_t id) const {
    if (id < 0 || id >= n_vocab()) {
        throw invalid_argument("token id " + std::to_string(id) + " is out of range [0, " + std::to_string(n_vocab()) + ")");
    }
    return types_[id];
}

size_t utf8_complete_prefix(std::string_view s) {
    // Only the last character can be incomplete: find where it starts (at most 3 continuation bytes
    // back) and hold it back if its lead byte promises more bytes than are there. A tail that can
    // never become valid UTF-8 (stray continuation bytes, invalid lead, impossible second byte) is not
    // held back: waiting would stall the stream for nothing.
    const auto * p = (const unsigned char *) s.data();
    const size_t n = s.size();
    size_t start = n;
    for (size_t k = 1; k <= 4 && k <= n; ++k) {
        if ((p[n - k] & 0xC0) != 0x80) {
            start = n - k;
            break;
        }
    }
    if (start == n) return n;  // empty, or only continuation bytes: not a character start
    const utf8_lead lead = utf8_lead_info(p[start]);
    if (lead.len < 2) return n;  // ASCII or an invalid lead byte
    const size_t have = n - start;
    if (have >= lead.len) return n;
    if (have >= 2 && (p[start + 1] < lead.lo || p[start + 1] > lead.hi)) return n;  // can never complete
    return start;
}

}  // namespace autoglm
