// Loading an mmproj GGUF (arch "clip", projector "glm4v") and encoding one image's patches.
// ref: transformers Glm4vVisionModel (spec B.1, B.5); the graph is in vision_graph.cpp.
#include "vision_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>

#include "arch.h"
#include "backend_loader.h"
#include "cpu_peak.h"
#include "error.h"
#include "gemm.h"
#include "gemm_panel.h"
#include "vision_graph.h"

namespace autoglm {

using arch::key;
using arch::tensor;

namespace {

const char * K(key k) { return arch::name(k); }

// OpenAI-CLIP normalization, what GLM-4.1V's preprocessor_config uses (for files without the keys).
constexpr std::array<float, 3> CLIP_MEAN{0.48145466f, 0.4578275f, 0.40821073f};
constexpr std::array<float, 3> CLIP_STD{0.26862954f, 0.26130258f, 0.27577711f};

std::array<float, 3> rgb_triple(const gguf_file & f, key k, const std::array<float, 3> & def) {
    if (!f.has(K(k))) return def;
    const std::vector<float> v = f.get_f32_array(K(k));
    if (v.size() != 3) {
        throw file_error(f.path() + ": '" + K(k) + "' has " + std::to_string(v.size()) + " values, expected 3 (R, G, B)");
    }
    return {v[0], v[1], v[2]};
}

}  // namespace

void vision_model::read_hparams(const gguf_file & f) {
    const std::string file_arch = f.get_str(K(key::GENERAL_ARCHITECTURE), "");
    if (file_arch != arch::VISION_ARCH) {
        throw file_error(f.path() + ": architecture '" + file_arch +
                         "', expected a vision projector (mmproj) file with architecture 'clip'" +
                         (file_arch == arch::TEXT_ARCH ? " - this is the GLM-4 text model; pass its mmproj file instead" : ""));
    }
    const std::string proj = f.get_str(K(key::CLIP_PROJECTOR_TYPE), "");
    if (proj != arch::VISION_PROJECTOR) {
        throw file_error(f.path() + ": projector type '" + proj + "', expected 'glm4v' (a GLM-4.1V / AutoGLM vision tower)");
    }
    if (!f.get_bool(K(key::CLIP_HAS_VISION_ENCODER), true)) throw file_error(f.path() + ": the mmproj has no vision encoder");

    hp_.n_embd = f.get_u32(K(key::CLIP_EMBEDDING_LENGTH));
    hp_.n_layer = f.get_u32(K(key::CLIP_BLOCK_COUNT));
    hp_.n_head = f.get_u32(K(key::CLIP_HEAD_COUNT));
    hp_.patch_size = f.get_u32(K(key::CLIP_PATCH_SIZE));
    hp_.eps = f.get_f32(K(key::CLIP_EPS), 1e-5f);
    hp_.merge_size = f.get_u32(K(key::AUTOGLM_SPATIAL_MERGE_SIZE), f.get_u32(K(key::CLIP_SPATIAL_MERGE_SIZE), 2));
    hp_.mean = rgb_triple(f, key::CLIP_IMAGE_MEAN, CLIP_MEAN);
    hp_.std = rgb_triple(f, key::CLIP_IMAGE_STD, CLIP_STD);
    hp_.min_pixels = f.get_u32(K(key::AUTOGLM_IMAGE_MIN_PIXELS), (uint32_t) hp_.min_pixels);
    hp_.max_pixels = f.get_u32(K(key::AUTOGLM_IMAGE_MAX_PIXELS), (uint32_t) hp_.max_pixels);

    const std::string where = f.path() + ": ";
    if (hp_.n_layer == 0 || hp_.n_embd == 0) throw file_error(where + "the vision tower has no blocks or zero width");
    // Each block has tensors of its own: more blocks than the file has tensors is corrupt, and would
    // size the per-layer tables before the first missing tensor is noticed.
    if (hp_.n_layer > f.n_tensors()) {
        throw file_error(where + "clip.vision.block_count " + std::to_string(hp_.n_layer) + " is more than the " +
                         std::to_string(f.n_tensors()) + " tensors the file holds");
    }
    if (hp_.n_head == 0 || hp_.n_embd % hp_.n_head || (hp_.n_embd / hp_.n_head) % 4) {
        throw file_error(where + "vision width " + std::to_string(hp_.n_embd) + " / " + std::to_string(hp_.n_head) +
                         " heads must give a head_dim that is a multiple of 4 (2-D RoPE over rows and columns)");
    }
    if (hp_.patch_size == 0 || hp_.merge_size == 0)
        throw file_error(where + "patch_size and spatial_merge_size must be positive");
    // The GGUF holds the Conv3d as two time slices; a still image is the same frame in both.
    const uint32_t tps = f.get_u32(K(key::AUTOGLM_TEMPORAL_PATCH_SIZE), 2);
    if (tps != 2) throw file_error(where + "temporal_patch_size " + std::to_string(tps) + " is not supported (only 2)");
    for (int c = 0; c < 3; ++c) {
        if (!(std::isfinite(hp_.std[c]) && std::fabs(hp_.std[c]) >= 1e-3f && std::isfinite(hp_.mean[c]))) {
            throw file_error(where + "clip.vision.image_mean/image_std channel " + std::to_string(c) + " is " +
                             std::to_string(hp_.mean[c]) + " / " + std::to_string(hp_.std[c]) +
                             "; the std must be finite and at least 1e-3 in size (CLIP uses about 0.27)");
        }
    }
    if (!(std::isfinite(hp_.eps) && hp_.eps > 0.0f && hp_.eps < 1.0f)) {
        throw file_error(where + "clip.vision.attention.layer_norm_epsilon = " + std::to_string(hp_.eps) +
                         " must be a small positive number (1e-5 or 1e-6)");
    }
    // A bound far above any screen (HF's default is 9,633,792): a larger value would let one small
    // image grow to gigabytes of patches.
    constexpr int64_t max_image_pixels = 50'000'000;
    if (hp_.min_pixels <= 0 || hp_.max_pixels < hp_.min_pixels || hp_.max_pixels > max_image_pixels) {
        throw file_error(where + "autoglm.image_min/max_pixels = " + std::to_string(hp_.min_pixels) + " / " +
                         std::to_string(hp_.max_pixels) +
                         " are not a valid range (0 < min <= max <= " + std::to_string(max_image_pixels) + ")");
    }
}

void vision_model::read_widths(const gguf_file & f) {
    // Widths come from the tensors (spec B.5: clip.vision.feed_forward_length is the merger's width).
    auto meta = [&](tensor id, int il = -1) {
        const std::string name = arch::name(id, il);
        ggml_tensor * t = f.tensor(name);
        if (!t) throw file_error(path_ + ": tensor '" + name + "' is missing (not a complete GLM-4V mmproj?)");
        return t;
    };
    hp_.n_ff = (uint32_t) meta(tensor::V_FFN_UP, 0)->ne[1];
    hp_.n_merger_ff = (uint32_t) meta(tensor::MM_UP)->ne[1];
    hp_.n_out = (uint32_t) meta(tensor::MM_DOWN)->ne[1];
    const std::string pos_name = arch::name(tensor::V_POS_EMBD);
    if (ggml_tensor * pe = f.tensor(pos_name)) {
        hp_.n_pos = (uint32_t) pe->ne[1];
        const auto side = (uint32_t) std::lround(std::sqrt((double) hp_.n_pos));
        if (side * side != hp_.n_pos) {
            throw file_error(path_ + ": " + pos_name + " has " + std::to_string(hp_.n_pos) + " entries, not a square grid");
        }
    }
    if (f.tensor(arch::name(tensor::V_ATTN_Q_NORM, 0))) {
        throw file_error(path_ + ": this vision tower has q/k norms (a GLM-OCR / GLM-5 variant), which is not supported");
    }
    // The two Conv3d time slices, summed into one matrix by derive_weights().
    const int64_t p = hp_.patch_size, E = hp_.n_embd;
    for (tensor id : {tensor::V_PATCH_EMBD, tensor::V_PATCH_EMBD_1}) {
        ggml_tensor * k = meta(id);
        const int64_t want[4] = {p, p, 3, E};
        if (!std::equal(want, want + 4, k->ne)) {
            throw file_error(path_ + ": tensor '" + std::string(ggml_get_name(k)) + "' has shape " +
                             shape_str(k->ne, ggml_n_dims(k)) + ", expected " + shape_str(want, 4) +
                             " (patch x patch x RGB x width)");
        }
        if (k->type != GGML_TYPE_F32 && !ggml_get_type_traits(k->type)->to_float) {
            throw file_error(path_ + ": patch kernel type " + ggml_type_name(k->type) + " cannot be read");
        }
    }
}

void vision_model::init_backends(const vision_params & params) {
    attn_ = cpu_attention_kernel(params.attention);  // first: a bad name fails before any loading
    const std::string & mt = params.matmul_type;
    if (mt != "file" && mt != "auto" && mt != "f32" && mt != "f16" && mt != "bf16") {
        throw invalid_argument("matmul_type '" + mt + "' is unknown; expected auto, file, f32, f16 or bf16");
    }
    backends_ = std::make_unique<backend_set>(params.n_threads, params.use_gpu);
    if (backends_->gpu()) attn_ = attn_kernel::none;
    if (mt == "f32") matmul_type_ = GGML_TYPE_F32;
    if (mt == "f16") matmul_type_ = GGML_TYPE_F16;
    if (mt == "bf16") matmul_type_ = GGML_TYPE_BF16;
    if (mt == "auto" && !backends_->gpu()) {
        // where vdpbf16ps runs the BF16 matrices: our float GEMM's avx512_bf16 variant, or ggml's kernels
        const auto feats = cpu_features();
        const bool ours = gemm_available() && !gemm::disabled_by_env() && gemm_isa_has_bf16(gemm_best_isa());
        if (ours || std::find(feats.begin(), feats.end(), "AVX512_BF16") != feats.end()) matmul_type_ = GGML_TYPE_BF16;
    }
    // a BF16 tower computes its attention in BF16 too, unless a kernel was asked for by name, or its
    // products would run slower than in F32: neither on the AMX tiles (where our GEMMs use them) nor by
    // a vdpbf16ps that does more multiply-adds per cycle than the F32 FMAs (measured: Zen 4 twice as many,
    // a Sapphire/Emerald Rapids Xeon half as many; cpu_peak.h)
    // (the peak is measured only when it decides: a few ms, once per process)
    const auto bf16_fast = [] {
        if (gemm_available() && gemm_best_isa() == gemm_isa::amx) return true;
        const cpu_peak_info peak = cpu_peak(1);
        return peak.bf16_per_cycle > peak.f32_per_cycle;
    };
    if (matmul_type_ == GGML_TYPE_BF16 && attn_ == attn_kernel::avx512 && cpu_attention_is_auto(params.attention) &&
        cpu_attention_has(attn_kernel::avx512_bf16) && bf16_fast()) {
        attn_ = attn_kernel::avx512_bf16;
    }
}

void vision_model::create_tensors(const gguf_file & f) {
    // Tensors take the file's type and the shape the architecture requires; matmul weights on the CPU
    // use a repacked layout where ggml has one. The whole tower is on one device.
    store_ = std::make_unique<weight_store>(f, "GLM-4V mmproj");
    ggml_backend_t dev = backends_->gpu() ? backends_->gpu() : backends_->cpu();
    using use = backend_set::weight_use;
    auto create = [&](tensor id, int il, std::vector<int64_t> ne, use u, bool required = true,
                      tensor_role role = tensor_role::weight) -> ggml_tensor * {
        const std::string name = arch::name(id, il);
        ggml_tensor * ft = f.tensor(name);
        if (ft && u == use::matmul && matmul_type_ != GGML_TYPE_COUNT && !ggml_is_quantized(ft->type)) {
            // (no extra buffer type of ggml repacks float matrices on x86, so converted ones stay plain)
            return store_->create_as(name, std::move(ne), backends_->weight_buft(dev, ft, use::other), matmul_type_);
        }
        return store_->create(name, std::move(ne), backends_->weight_buft(dev, ft, u), required, role);
    };

    const int64_t E = hp_.n_embd, F = hp_.n_ff, O = hp_.n_out, MF = hp_.n_merger_ff, p = hp_.patch_size, m = hp_.merge_size;
    w_.patch_w = store_->create_extra(backends_->weight_buft(dev, nullptr, use::other), GGML_TYPE_F32, 3 * p * p, E,
                                      "v.patch_embd.weight(t0+t1)");
    w_.patch_b = create(tensor::V_PATCH_EMBD_B, -1, {E}, use::other);
    w_.norm_embd = create(tensor::V_NORM_EMBD, -1, {E}, use::other, false);
    // interpolated (ggml_interpolate) and gathered at run time: F32 only
    if (hp_.n_pos) w_.pos_embd = create(tensor::V_POS_EMBD, -1, {E, hp_.n_pos}, use::other, true, tensor_role::f32);

    w_.layers.resize(hp_.n_layer);
    for (int il = 0; il < (int) hp_.n_layer; ++il) {
        vision_layer & L = w_.layers[il];
        L.ln1 = create(tensor::V_LN1, il, {E}, use::other);
        L.qkv = create(tensor::V_ATTN_QKV, il, {E, 3 * E}, use::matmul);
        L.qkv_b = create(tensor::V_ATTN_QKV_B, il, {3 * E}, use::other, false);
        L.out = create(tensor::V_ATTN_OUT, il, {E, E}, use::matmul);
        L.out_b = create(tensor::V_ATTN_OUT_B, il, {E}, use::other, false);
        L.ln2 = create(tensor::V_LN2, il, {E}, use::other);
        L.ffn_gate = create(tensor::V_FFN_GATE, il, {E, F}, use::matmul);
        L.ffn_gate_b = create(tensor::V_FFN_GATE_B, il, {F}, use::other, false);
        L.ffn_up = create(tensor::V_FFN_UP, il, {E, F}, use::matmul);
        L.ffn_up_b = create(tensor::V_FFN_UP_B, il, {F}, use::other, false);
        L.ffn_down = create(tensor::V_FFN_DOWN, il, {F, E}, use::matmul);
        L.ffn_down_b = create(tensor::V_FFN_DOWN_B, il, {E}, use::other, false);
    }
    w_.post_ln = create(tensor::V_POST_LN, -1, {E}, use::other);
    // Used through a 2-D view (reshape), so it keeps a plain layout.
    w_.merge_w = create(tensor::MM_DOWNSAMPLE, -1, {m, m, E, O}, use::other);
    w_.merge_b = create(tensor::MM_DOWNSAMPLE_B, -1, {O}, use::other);
    w_.fc = create(tensor::MM_FC, -1, {O, O}, use::matmul);
    w_.fc_b = create(tensor::MM_FC_B, -1, {O}, use::other, false);
    w_.post_norm = create(tensor::MM_POST_NORM, -1, {O}, use::other);
    w_.post_norm_b = create(tensor::MM_POST_NORM_B, -1, {O}, use::other, false);
    w_.gate = create(tensor::MM_GATE, -1, {O, MF}, use::matmul);
    w_.gate_b = create(tensor::MM_GATE_B, -1, {MF}, use::other, false);
    w_.up = create(tensor::MM_UP, -1, {O, MF}, use::matmul);
    w_.up_b = create(tensor::MM_UP_B, -1, {MF}, use::other, false);
    w_.down = create(tensor::MM_DOWN, -1, {MF, O}, use::matmul);
    w_.down_b = create(tensor::MM_DOWN_B, -1, {O}, use::other, false);
}

void vision_model::derive_weights(const gguf_file & f) {
    // Conv3d over a still image (both time slices equal) = (W_t0 + W_t1) . patch. The GGUF kernel
    // [p, p, 3, E] = HF [E, 3, p, p] row-major: output e's row is (C, py, px)-flattened, which is the
    // order of a pixel_values patch row, so the kernel is already a [3*p*p, E] matrix.
    const size_t n = (size_t) 3 * hp_.patch_size * hp_.patch_size * hp_.n_embd;
    auto to_f32 = [&](tensor id, std::vector<float> & out) {
        const std::string name = arch::name(id);
        const ggml_tensor * k = f.tensor(name);
        out.resize(n);
        const uint8_t * src = f.tensor_data(name);
        if (k->type == GGML_TYPE_F32) std::memcpy(out.data(), src, n * sizeof(float));  // ggml has no F32 to_float
        else ggml_get_type_traits(k->type)->to_float(src, out.data(), (int64_t) n);
    };
    std::vector<float> sum, tmp;
    to_f32(tensor::V_PATCH_EMBD, sum);
    to_f32(tensor::V_PATCH_EMBD_1, tmp);
    for (size_t i = 0; i < n; ++i) sum[i] += tmp[i];
    ggml_backend_tensor_set(w_.patch_w, sum.data(), 0, n * sizeof(float));
}

void vision_model::init_scheduler() {
    auto all = backends_->all();
    sched_.reset(ggml_backend_sched_new(all.data(), nullptr, (int) all.size(), vision_graph_max_nodes(hp_), false, true));
    if (!sched_) throw error("cannot create the backend scheduler");
    graph_buf_.resize(vision_graph_ctx_size(hp_));
}

vision_model::vision_model(const std::string & mmproj_path, const vision_params & params) : path_(mmproj_path) {
    gguf_file f(mmproj_path);
    read_hparams(f);
    read_widths(f);
    init_backends(params);
    create_tensors(f);
    store_->load();
    weight_bytes_ = store_->bytes();
    derive_weights(f);
    init_scheduler();
}

vision_model::~vision_model() = default;

std::string vision_model::devices() const { return backends_->describe(); }
size_t vision_model::weight_bytes() const { return weight_bytes_; }
std::string vision_model::weights_device() const { return device_of(w_.layers.empty() ? w_.patch_w : w_.layers[0].qkv); }
std::string vision_model::matmul_type() const {
    const ggml_tensor * t = w_.layers.empty() ? w_.fc : w_.layers[0].qkv;
    return ggml_type_name(t->type);
}
std::string vision_model::attention_kernel() const { return attn_kernel_name(attn_); }

resize_params vision_model::resize(int64_t min_pixels, int64_t max_pixels) const {
    resize_params r;
    r.patch_size = (int32_t) hp_.patch_size;
    r.merge_size = (int32_t) hp_.merge_size;
    r.temporal_patch_size = 2;
    r.min_pixels = min_pixels > 0 ? min_pixels : hp_.min_pixels;
    r.max_pixels = max_pixels > 0 ? max_pixels : hp_.max_pixels;
    return r;
}

size_t vision_model::compute_bytes(int32_t grid_h, int32_t grid_w) {
    const int32_t m = (int32_t) hp_.merge_size;
    if (grid_h <= 0 || grid_w <= 0 || grid_h % m || grid_w % m) {
        throw invalid_argument("compute_bytes: grid must be positive multiples of the merge size " + std::to_string(m));
    }
    std::lock_guard<std::mutex> lock(mu_);
    ggml_init_params ip{graph_buf_.size(), graph_buf_.data(), true};
    ggml_ctx_ptr ctx(ggml_init(ip));
    vision_graph g = build_vision_graph(ctx.get(), hp_, w_, grid_h, grid_w, attn_, !backends_->gpu());
    ggml_backend_sched_reset(sched_.get());
    if (!ggml_backend_sched_reserve(sched_.get(), g.gf)) throw out_of_memory("cannot plan compute buffers for this grid");
    size_t total = 0;
    for (ggml_backend_t be : backends_->all()) total += ggml_backend_sched_get_buffer_size(sched_.get(), be);
    return total;
}

void vision_model::install_observers() {
    eval_chain_.clear();
    if (tensor_dump::enabled()) {
        dump_.begin("vision");
        eval_chain_.add(&tensor_dump::eval_cb, &dump_);
    }
    if (op_profile::enabled()) {
        profile_.attach(backends_->n_threads());
        eval_chain_.add(&op_profile::eval_cb, &profile_);
    }
    eval_chain_.install(sched_.get());
}

std::vector<float> vision_model::encode(const pixel_patches & px) {
    const int32_t m = (int32_t) hp_.merge_size;
    const int32_t patch_dim = 3 * (int32_t) hp_.patch_size * (int32_t) hp_.patch_size;
    if (px.grid_h <= 0 || px.grid_w <= 0 || px.grid_h % m || px.grid_w % m) {
        throw invalid_argument("encode: grid " + std::to_string(px.grid_h) + " x " + std::to_string(px.grid_w) +
                               " must be positive multiples of the merge size " + std::to_string(m));
    }
    if (px.patch_dim != patch_dim) {
        throw invalid_argument("encode: patch_dim " + std::to_string(px.patch_dim) + ", this model takes 3*" +
                               std::to_string(hp_.patch_size) + "*" + std::to_string(hp_.patch_size) + " = " +
                               std::to_string(patch_dim));
    }
    const size_t n_patches = (size_t) px.grid_h * px.grid_w;
    if (px.values.size() != n_patches * patch_dim) {
        throw invalid_argument("encode: " + std::to_string(px.values.size()) +
                               " values, expected grid_h*grid_w*patch_dim = " + std::to_string(n_patches * patch_dim));
    }

    std::lock_guard<std::mutex> lock(mu_);
    ggml_init_params ip{graph_buf_.size(), graph_buf_.data(), true};
    ggml_ctx_ptr ctx(ggml_init(ip));
    vision_graph g = build_vision_graph(ctx.get(), hp_, w_, px.grid_h, px.grid_w, attn_, !backends_->gpu());

    // Compute buffers follow the graph: the scheduler grows them for a larger image and keeps them.
    ggml_backend_sched_reset(sched_.get());
    if (!ggml_backend_sched_alloc_graph(sched_.get(), g.gf)) {
        throw out_of_memory("cannot allocate compute buffers for a " + std::to_string(px.grid_h) + " x " +
                            std::to_string(px.grid_w) + "-patch image; use a smaller max_pixels");
    }
    ggml_backend_tensor_set(g.inp_patches, px.values.data(), 0, px.values.size() * sizeof(float));

    std::vector<int32_t> rows, cols;
    merge_window_coords(px.grid_h, px.grid_w, m, rows, cols);
    std::vector<int32_t> pos(4 * n_patches);
    for (size_t i = 0; i < n_patches; ++i) {
        pos[i] = pos[2 * n_patches + i] = rows[i];
        pos[n_patches + i] = pos[3 * n_patches + i] = cols[i];
    }
    ggml_backend_tensor_set(g.inp_pos, pos.data(), 0, pos.size() * sizeof(int32_t));
    if (g.inp_raster) {
        std::vector<int32_t> raster(n_patches);
        for (size_t i = 0; i < n_patches; ++i) raster[i] = rows[i] * px.grid_w + cols[i];
        ggml_backend_tensor_set(g.inp_raster, raster.data(), 0, raster.size() * sizeof(int32_t));
    }

    install_observers();
    const bool ok = ggml_backend_sched_graph_compute(sched_.get(), g.gf) == GGML_STATUS_SUCCESS;
    profile_.report("vision encode");
    if (!ok) throw error("vision graph computation failed");
    std::vector<float> out(ggml_nelements(g.out));
    ggml_backend_tensor_get(g.out, out.data(), 0, out.size() * sizeof(float));
    return out;
}

}  // namespace autoglm
