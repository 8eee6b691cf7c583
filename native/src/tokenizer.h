// GLM-4 byte-level BPE tokenizer built from a GGUF's tokenizer.ggml.* arrays.
// ref: HF tokenizers (BPE model + GLM-4 Split pre-tokenizer + ByteLevel), llama.cpp's "glm4" pre-type.
//
// encode(): text -> ids. With parse_special, added tokens (GGUF type CONTROL or USER_DEFINED) that
// occur in the text are matched first (leftmost, then longest, as HF's matcher) and emitted as their
// ids; the text between them goes through the GLM-4 pre-tokenizer regex, byte-level mapping and BPE
// merges (by rank). Without parse_special, their text is ordinary text (no added-token ids at all;
// HF's encode_special_tokens and llama.cpp would still match USER_DEFINED ones).
// token_bytes(): UNUSED placeholders ("[PAD<id>]") stand for no bytes.
// token_bytes(): the raw bytes a token stands for (byte-level mapping undone); added tokens give
// their text. A multi-byte UTF-8 character may be split across tokens: callers that stream must
// buffer incomplete sequences (see utf8_complete_prefix).
//
// Text that is not valid UTF-8 (possible from C++ callers only) is still encoded losslessly: each
// invalid byte counts as one "other" (punctuation-like) character for the pre-tokenizer and keeps its
// byte, so decode(encode(s)) == s for any byte string. Valid text is tokenized exactly as HF does.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace autoglm {

// GGUF token types (gguf-py TokenType).
enum token_type : int32_t {
    TOKEN_NORMAL = 1,
    TOKEN_UNKNOWN = 2,
    TOKEN_CONTROL = 3,
    TOKEN_USER_DEFINED = 4,
    TOKEN_UNUSED = 5,
    TOKEN_BYTE = 6,
};

struct vocab_data {
    std::vector<std::string> tokens;   // tokenizer.ggml.tokens (byte-level unicode strings for normal tokens)
    std::vector<int32_t> types;        // tokenizer.ggml.token_type
    std::vector<std::string> merges;   // tokenizer.ggml.merges, "left right", in rank order
    // A pre-token that is itself a vocabulary token becomes that token without running the merges (HF
    // BPE "ignore_merges"). GLM-4's tokenizer.json sets it, and llama.cpp forces it for pre "glm4"/"glm5";
    // GGUF has no key for it, so the default is GLM-4's value.
    bool ignore_merges = true;
};

class tokenizer {
public:
    explicit tokenizer(vocab_data data);  // throws autoglm::error on malformed data (names the entry)

    std::vector<int32_t> encode(std::string_view text, bool parse_special) const;
    std::string token_bytes(int32_t id) const;                   // throws invalid_argument for a bad id
    std::string decode(const std::vector<int32_t> & ids) const;  // concatenated token_bytes
    int32_t n_vocab() const { return (int32_t) tokens_.size(); }
    int32_t find(std::string_view token_text) const;             // id of an exact token string, or -1
    int32_t type(int32_t id) const;

private:
    struct merge_result {
        int32_t rank;    // position in the merges list: lower merges first
        int32_t result;  // id of left + right
    };
    struct bpe_scratch;  // per-call buffers of bpe(), reused across the pre-tokens of one encode()

    std::vector<std::string> tokens_;
    std::vector<int32_t> types_;
    std::vector<std::string> bytes_;                              // token_bytes() of every id
    std::unordered_map<std::string, int32_t> token_to_id_;        // every token text (first id wins)
    std::unordered_map<std::string, int32_t> word_to_id_;         // byte string -> BPE-model token (ignore_merges)
    std::unordered_map<uint64_t, merge_result> merges_;           // key: left id << 32 | right id
    std::array<int32_t, 256> byte_token_{};                       // the single-byte token of each byte
    std::vector<std::pair<std::string, int32_t>> specials_;      // added tokens, longest text first
    std::array<std::vector<uint32_t>, 256> specials_by_byte_;     // indices into specials_ by first byte
    bool ignore_merges_ = true;

    void encode_text(std::string_view text, std::vector<int32_t> & out) const;
    void bpe(std::string_view word, bpe_scratch & scratch, std::vector<int32_t> & out) const;
};

// Length of the longest prefix of s that ends on a UTF-8 character boundary (incomplete trailing
// sequences are held back by streaming callers until the next piece completes them).
size_t utf8_complete_prefix(std::string_view s);

}  // namespace autoglm
