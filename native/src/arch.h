// Every GGUF key and tensor name this runtime reads, in one table: the text model (architecture "glm4",
// llama.cpp's LLM_ARCH_GLM4 layout) and the vision projector (architecture "clip", projector "glm4v",
// llama.cpp's mtmd layout), plus our own "autoglm.*" keys. The loaders use the names from here, and
// the converter gets the same table through the Python binding (_core.gguf_names()), so a name is
// written down once for the writer and the reader.
// ref: llama.cpp src/llama-arch.cpp (LLM_ARCH_GLM4), tools/mtmd/clip-impl.h (PROJECTOR_TYPE_GLM4V).
#pragma once

#include <string>

namespace autoglm::arch {

inline constexpr const char * TEXT_ARCH = "glm4";
inline constexpr const char * VISION_ARCH = "clip";
inline constexpr const char * VISION_PROJECTOR = "glm4v";

// X(ID, "gguf.key")
#define AUTOGLM_GGUF_KEYS(X)                                             \
    X(GENERAL_ARCHITECTURE, "general.architecture")                      \
    X(GENERAL_NAME, "general.name")                                      \
    /* text model: hyperparameters */                                    \
    X(TEXT_CONTEXT_LENGTH, "glm4.context_length")                        \
    X(TEXT_EMBEDDING_LENGTH, "glm4.embedding_length")                    \
    X(TEXT_BLOCK_COUNT, "glm4.block_count")                              \
    X(TEXT_FEED_FORWARD_LENGTH, "glm4.feed_forward_length")              \
    X(TEXT_HEAD_COUNT, "glm4.attention.head_count")                      \
    X(TEXT_HEAD_COUNT_KV, "glm4.attention.head_count_kv")                \
    X(TEXT_KEY_LENGTH, "glm4.attention.key_length")                      \
    X(TEXT_RMS_EPS, "glm4.attention.layer_norm_rms_epsilon")             \
    X(TEXT_ROPE_DIMENSION_COUNT, "glm4.rope.dimension_count")            \
    X(TEXT_ROPE_SECTIONS, "glm4.rope.dimension_sections")                \
    X(TEXT_ROPE_FREQ_BASE, "glm4.rope.freq_base")                        \
    /* text model: vocabulary, chat template, stop tokens */             \
    X(TOKENIZER_MODEL, "tokenizer.ggml.model")                           \
    X(TOKENIZER_TOKENS, "tokenizer.ggml.tokens")                         \
    X(TOKENIZER_TOKEN_TYPE, "tokenizer.ggml.token_type")                 \
    X(TOKENIZER_MERGES, "tokenizer.ggml.merges")                         \
    X(TOKENIZER_EOS_ID, "tokenizer.ggml.eos_token_id")                   \
    X(TOKENIZER_EOT_ID, "tokenizer.ggml.eot_token_id")                   \
    X(TOKENIZER_CHAT_TEMPLATE, "tokenizer.chat_template")                \
    X(AUTOGLM_IGNORE_MERGES, "autoglm.tokenizer.ignore_merges")          \
    X(AUTOGLM_EOG_IDS, "autoglm.eog_token_ids")                          \
    /* vision projector */                                               \
    X(CLIP_PROJECTOR_TYPE, "clip.projector_type")                        \
    X(CLIP_HAS_VISION_ENCODER, "clip.has_vision_encoder")                \
    X(CLIP_USE_SILU, "clip.use_silu")                                    \
    X(CLIP_PROJECTION_DIM, "clip.vision.projection_dim")                 \
    X(CLIP_IMAGE_SIZE, "clip.vision.image_size")                         \
    X(CLIP_PATCH_SIZE, "clip.vision.patch_size")                         \
    X(CLIP_EMBEDDING_LENGTH, "clip.vision.embedding_length")             \
    X(CLIP_FEED_FORWARD_LENGTH, "clip.vision.feed_forward_length")       \
    X(CLIP_BLOCK_COUNT, "clip.vision.block_count")                       \
    X(CLIP_HEAD_COUNT, "clip.vision.attention.head_count")               \
    X(CLIP_EPS, "clip.vision.attention.layer_norm_epsilon")              \
    X(CLIP_IMAGE_MEAN, "clip.vision.image_mean")                         \
    X(CLIP_IMAGE_STD, "clip.vision.image_std")                           \
    X(CLIP_SPATIAL_MERGE_SIZE, "clip.vision.spatial_merge_size")         \
    X(AUTOGLM_SPATIAL_MERGE_SIZE, "autoglm.vision.spatial_merge_size")   \
    X(AUTOGLM_TEMPORAL_PATCH_SIZE, "autoglm.vision.temporal_patch_size") \
    X(AUTOGLM_IMAGE_MIN_PIXELS, "autoglm.image_min_pixels")              \
    X(AUTOGLM_IMAGE_MAX_PIXELS, "autoglm.image_max_pixels")

// X(ID, "gguf tensor name"): "%d" is the block index.
#define AUTOGLM_GGUF_TENSORS(X)                                            \
    /* text model */                                                       \
    X(TOKEN_EMBD, "token_embd.weight")                                     \
    X(OUTPUT_NORM, "output_norm.weight")                                   \
    X(OUTPUT, "output.weight")                                             \
    X(ATTN_NORM, "blk.%d.attn_norm.weight")                                \
    X(ATTN_Q, "blk.%d.attn_q.weight")                                      \
    X(ATTN_Q_B, "blk.%d.attn_q.bias")                                      \
    X(ATTN_K, "blk.%d.attn_k.weight")                                      \
    X(ATTN_K_B, "blk.%d.attn_k.bias")                                      \
    X(ATTN_V, "blk.%d.attn_v.weight")                                      \
    X(ATTN_V_B, "blk.%d.attn_v.bias")                                      \
    X(ATTN_OUT, "blk.%d.attn_output.weight")                               \
    X(ATTN_POST_NORM, "blk.%d.post_attention_norm.weight")                 \
    X(FFN_NORM, "blk.%d.ffn_norm.weight")                                  \
    X(FFN_UP, "blk.%d.ffn_up.weight") /* gate rows first */                \
    X(FFN_DOWN, "blk.%d.ffn_down.weight")                                  \
    X(FFN_POST_NORM, "blk.%d.post_ffw_norm.weight")                        \
    /* vision tower */                                                     \
    X(V_PATCH_EMBD, "v.patch_embd.weight")   /* Conv3d time slice 0 */     \
    X(V_PATCH_EMBD_1, "v.patch_embd.weight.1") /* time slice 1 */          \
    X(V_PATCH_EMBD_B, "v.patch_embd.bias")                                 \
    X(V_NORM_EMBD, "v.norm_embd.weight")                                   \
    X(V_POS_EMBD, "v.position_embd.weight")                                \
    X(V_LN1, "v.blk.%d.ln1.weight")                                        \
    X(V_ATTN_QKV, "v.blk.%d.attn_qkv.weight")                              \
    X(V_ATTN_QKV_B, "v.blk.%d.attn_qkv.bias")                              \
    X(V_ATTN_Q_NORM, "v.blk.%d.attn_q_norm.weight") /* GLM-OCR: refused */ \
    X(V_ATTN_OUT, "v.blk.%d.attn_out.weight")                              \
    X(V_ATTN_OUT_B, "v.blk.%d.attn_out.bias")                              \
    X(V_LN2, "v.blk.%d.ln2.weight")                                        \
    X(V_FFN_GATE, "v.blk.%d.ffn_gate.weight")                              \
    X(V_FFN_GATE_B, "v.blk.%d.ffn_gate.bias")                              \
    X(V_FFN_UP, "v.blk.%d.ffn_up.weight")                                  \
    X(V_FFN_UP_B, "v.blk.%d.ffn_up.bias")                                  \
    X(V_FFN_DOWN, "v.blk.%d.ffn_down.weight")                              \
    X(V_FFN_DOWN_B, "v.blk.%d.ffn_down.bias")                              \
    X(V_POST_LN, "v.post_ln.weight")                                       \
    /* merger */                                                           \
    X(MM_DOWNSAMPLE, "mm.patch_merger.weight")                             \
    X(MM_DOWNSAMPLE_B, "mm.patch_merger.bias")                             \
    X(MM_FC, "mm.model.fc.weight")                                         \
    X(MM_FC_B, "mm.model.fc.bias")                                         \
    X(MM_POST_NORM, "mm.post_norm.weight")                                 \
    X(MM_POST_NORM_B, "mm.post_norm.bias")                                 \
    X(MM_GATE, "mm.gate.weight")                                           \
    X(MM_GATE_B, "mm.gate.bias")                                           \
    X(MM_UP, "mm.up.weight")                                               \
    X(MM_UP_B, "mm.up.bias")                                               \
    X(MM_DOWN, "mm.down.weight")                                           \
    X(MM_DOWN_B, "mm.down.bias")

#define AUTOGLM_ARCH_ID(id, str) id,
enum class key { AUTOGLM_GGUF_KEYS(AUTOGLM_ARCH_ID) };
enum class tensor { AUTOGLM_GGUF_TENSORS(AUTOGLM_ARCH_ID) };
#undef AUTOGLM_ARCH_ID

// The GGUF string of a key: "glm4.block_count".
const char * name(key k);
// A tensor's name in the file; per-block names take the block index: name(tensor::ATTN_Q, 3) is
// "blk.3.attn_q.weight".
std::string name(tensor t, int block = -1);

// The whole table, for the Python binding: (id, GGUF string) pairs, per-block tensor names with "%d".
struct entry {
    const char * id;
    const char * gguf;
};
const entry * keys(size_t & n);
const entry * tensors(size_t & n);

}  // namespace autoglm::arch
