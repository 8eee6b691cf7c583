// Loading an mmproj GGUF (arch "clip", projector "glm4v") and encoding one image's patches.
// ref: transformers Glm4vVisionModel (spec B.1, B.5); the graph is in vision_graph.cpp.
#include "vision_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>

#include "backend_loader.h"
#include "error.h"
#include "gguf_file.h"
#include "op_profile.h"
#include "cpu_attention.h"
#include "vision_graph.h"
#include "weight_store.h"

namespace autoglm {

namespace {

// OpenAI-CLIP normalization, what GLM-4.1V's preprocessor_config uses (for files without the keys).
constexpr std::array<float, 3> CLIP_MEAN{0.48145466f, 0.4578275f, 0.40821073f};
constexpr std::array<float, 3> CLIP_STD{0.26862954f, 0.26130258f, 0.27577711f};

std::array<float, 3> rgb_triple(const gguf_file & f, const char * key, const std::array<float, 3> & def) {
    if (!f.has(key)) return def;
    const std::vector<float> v = f.get_f32_array(key);
    if (v.size() != 3) {
        throw file_error(f.path() + ": '" + key + "' has " + std::to_string(v.size()) + " values, expected 3 (R, G, B)");
    }
    return {v[0], v[1], v[2]};
}

}  // namespace

struct vision_model::impl {
    std::string path;
    vision_hparams hp;
    vision_weights w;
    std::unique_ptr<backend_set> backends;
    std::unique_ptr<weight_store> weights;
    size_t weight_bytes = 0;
    ggml_sched_ptr sched;
    std::vector<uint8_t> graph_buf;  // metadata arena for graph building (no tensor data)
    std::mutex mu;                   // one encode at a time: the scheduler and its buffers are shared
    attn_kernel attn = attn_kernel::none;  // a GPU-resident tower uses ggml's fused attention
    ggml_type matmul_type = GGML_TYPE_COUNT;  // the matrices' type when converted at load, else COUNT

    void read_hparams(const gguf_file & f);
    void load(const gguf_file & f, const vision_params & params);
};

void vision_model::impl::read_hparams(const gguf_file & f) {
    const std::string arch = f.get_str("general.architecture", "");
    if (arch != "clip") {
        throw file_error(f.path() + ": architecture '" + arch + "', expected a vision projector (mmproj) file with architecture 'clip'" +
                         (arch == "glm4" ? " - this is the GLM-4 text model; pass its mmproj file instead" : ""));
    }
    const std::string proj = f.get_str("clip.projector_type", "");
    if (proj != "glm4v") {
        throw file_error(f.path() + ": projector type '" + proj + "', expected 'glm4v' (a GLM-4.1V / AutoGLM vision tower)");
    }
    if (!f.get_bool("clip.has_vision_encoder", true)) throw file_error(f.path() + ": the mmproj has no vision encoder");

    hp.n_embd = f.get_u32("clip.vision.embedding_length");
    hp.n_layer = f.get_u32("clip.vision.block_count");
    hp.n_head = f.get_u32("clip.vision.attention.head_count");
    hp.patch_size = f.get_u32("clip.vision.patch_size");
    hp.eps = f.get_f32("clip.vision.attention.layer_norm_epsilon", 1e-5f);
    hp.merge_size = f.get_u32("autoglm.vision.spatial_merge_size", f.get_u32("clip.vision.spatial_merge_size", 2));
    hp.mean = rgb_triple(f, "clip.vision.image_mean", CLIP_MEAN);
    hp.std = rgb_triple(f, "clip.vision.image_std", CLIP_STD);
    hp.min_pixels = f.get_u32("autoglm.image_min_pixels", (uint32_t) hp.min_pixels);
    hp.max_pixels = f.get_u32("autoglm.image_max_pixels", (uint32_t) hp.max_pixels);

    const std::string where = f.path() + ": ";
    if (hp.n_layer == 0 || hp.n_embd == 0) throw file_error(where + "the vision tower has no blocks or zero width");
    // Each block has tensors of its own: more blocks than the file has tensors is corrupt, and would
    // size the per-layer tables before the first missing tensor is noticed.
    if (hp.n_layer > f.n_tensors()) {
        throw file_error(where + "clip.vision.block_count " + std::to_string(hp.n_layer) + " is more than the " +
                         std::to_string(f.n_tensors()) + " tensors the file holds");
    }
    if (hp.n_head == 0 || hp.n_embd % hp.n_head || (hp.n_embd / hp.n_head) % 4) {
        throw file_error(where + "vision width " + std::to_string(hp.n_embd) + " / " + std::to_string(hp.n_head) +
                         " heads must give a head_dim that is a multiple of 4 (2-D RoPE over rows and columns)");
    }
    if (hp.patch_size == 0 || hp.merge_size == 0) throw file_error(where + "patch_size and spatial_merge_size must be positive");
    // The GGUF holds the Conv3d as two time slices; a still image is the same frame in both.
    const uint32_t tps = f.get_u32("autoglm.vision.temporal_patch_size", 2);
    if (tps != 2) throw file_error(where + "temporal_patch_size " + std::to_string(tps) + " is not supported (only 2)");
    for (int c = 0; c < 3; ++c) {
        if (!(std::isfinite(hp.std[c]) && std::fabs(hp.std[c]) >= 1e-3f && std::isfinite(hp.mean[c]))) {
            throw file_error(where + "clip.vision.image_mean/image_std channel " + std::to_string(c) + " is " +
                             std::to_string(hp.mean[c]) + " / " + std::to_string(hp.std[c]) +
                             "; the std must be finite and at least 1e-3 in size (CLIP uses about 0.27)");
        }
    }
    if (!(std::isfinite(hp.eps) && hp.eps > 0.0f && hp.eps < 1.0f)) {
        throw file_error(where + "clip.vision.attention.layer_norm_epsilon = " + std::to_string(hp.eps) +
                         " must be a small positive number (1e-5 or 1e-6)");
    }
    // A bound far above any screen (HF's default is 9,633,792): a larger value would let one small
    // image grow to gigabytes of patches.
    constexpr int64_t max_image_pixels = 50'000'000;
    if (hp.min_pixels <= 0 || hp.max_pixels < hp.min_pixels || hp.max_pixels > max_image_pixels) {
        throw file_error(where + "autoglm.image_min/max_pixels = " + std::to_string(hp.min_pixels) + " / " +
                         std::to_string(hp.max_pixels) + " are not a valid range (0 < min <= max <= " +
                         std::to_string(max_image_pixels) + ")");
    }
}

void vision_model::impl::load(const gguf_file & f, const vision_params & params) {
    // Widths come from the tensors (spec B.5: clip.vision.feed_forward_length is the merger's width).
    auto meta = [&](const std::string & name) {
        ggml_tensor * t = f.tensor(name);
        if (!t) throw file_error(path + ": tensor '" + name + "' is missing (not a complete GLM-4V mmproj?)");
        return t;
    };
    hp.n_ff = (uint32_t) meta("v.blk.0.ffn_up.weight")->ne[1];
    hp.n_merger_ff = (uint32_t) meta("mm.up.weight")->ne[1];
    hp.n_out = (uint32_t) meta("mm.down.weight")->ne[1];
    if (ggml_tensor * pe = f.tensor("v.position_embd.weight")) {
        hp.n_pos = (uint32_t) pe->ne[1];
        const auto side = (uint32_t) std::lround(std::sqrt((double) hp.n_pos));
        if (side * side != hp.n_pos) {
            throw file_error(path + ": v.position_embd.weight has " + std::to_string(hp.n_pos) + " entries, not a square grid");
        }
    }
    if (f.tensor("v.blk.0.attn_q_norm.weight")) {
        throw file_error(path + ": this vision tower has q/k norms (a GLM-OCR / GLM-5 variant), which is not supported");
    }

    attn = cpu_attention_kernel(params.attention);  // first: a bad name fails before any loading
    const std::string & mt = params.matmul_type;
    if (mt != "file" && mt != "auto" && mt != "f32" && mt != "f16" && mt != "bf16") {
        throw invalid_argument("matmul_type '" + mt + "' is unknown; expected auto, file, f32, f16 or bf16");
    }
    backends = std::make_unique<backend_set>(params.n_threads, params.use_gpu);
    if (backends->gpu()) attn = attn_kernel::none;
    ggml_backend_t dev = backends->gpu() ? backends->gpu() : backends->cpu();
    if (mt == "f32") matmul_type = GGML_TYPE_F32;
    if (mt == "f16") matmul_type = GGML_TYPE_F16;
    if (mt == "bf16") matmul_type = GGML_TYPE_BF16;
    if (mt == "auto" && dev == backends->cpu()) {
        const auto feats = cpu_features();
        if (std::find(feats.begin(), feats.end(), "AVX512_BF16") != feats.end()) matmul_type = GGML_TYPE_BF16;
    }

    // Tensors take the file's type and the shape the architecture requires; matmul weights on the CPU
    // use a repacked layout where ggml has one.
    weights = std::make_unique<weight_store>(f, "GLM-4V mmproj");
    auto plain_buft = [&] {
        return backends->gpu() ? ggml_backend_dev_buffer_type(backends->gpu_dev()) : ggml_backend_dev_buffer_type(backends->cpu_dev());
    };
    enum class use { other, matmul };
    auto create = [&](const std::string & name, std::vector<int64_t> ne, use u, bool required = true,
                      tensor_role role = tensor_role::weight) -> ggml_tensor * {
        ggml_tensor * ft = f.tensor(name);
        ggml_backend_buffer_type_t buft = plain_buft();
        const bool convert = ft && u == use::matmul && matmul_type != GGML_TYPE_COUNT && !ggml_is_quantized(ft->type);
        // (no extra buffer type of ggml repacks float matrices on x86, so converted ones stay plain)
        if (convert) return weights->create_as(name, std::move(ne), buft, matmul_type);
        if (ft && dev == backends->cpu() && u == use::matmul) buft = backends->cpu_matmul_buft(ft);
        return weights->create(name, std::move(ne), buft, required, role);
    };

    const int64_t E = hp.n_embd, F = hp.n_ff, O = hp.n_out, MF = hp.n_merger_ff, p = hp.patch_size, m = hp.merge_size;
    const int64_t patch_dim = 3 * p * p;

    // The two Conv3d time slices, checked, then summed below into one F32 [3*p*p, E] matrix.
    ggml_tensor * k0 = meta("v.patch_embd.weight");
    ggml_tensor * k1 = meta("v.patch_embd.weight.1");
    for (ggml_tensor * k : {k0, k1}) {
        const int64_t want[4] = {p, p, 3, E};
        if (!std::equal(want, want + 4, k->ne)) {
            throw file_error(path + ": tensor '" + std::string(ggml_get_name(k)) + "' has shape " + shape_str(k->ne, ggml_n_dims(k)) +
                             ", expected " + shape_str(want, 4) + " (patch x patch x RGB x width)");
        }
        if (k->type != GGML_TYPE_F32 && !ggml_get_type_traits(k->type)->to_float) {
            throw file_error(path + ": patch kernel type " + ggml_type_name(k->type) + " cannot be read");
        }
    }
    w.patch_w = weights->create_extra(plain_buft(), GGML_TYPE_F32, patch_dim, E, "v.patch_embd.weight(t0+t1)");
    w.patch_b = create("v.patch_embd.bias", {E}, use::other);
    w.norm_embd = create("v.norm_embd.weight", {E}, use::other, false);
    // interpolated (ggml_interpolate) and gathered at run time: F32 only
    if (hp.n_pos) w.pos_embd = create("v.position_embd.weight", {E, hp.n_pos}, use::other, true, tensor_role::f32);

    w.layers.resize(hp.n_layer);
    for (uint32_t il = 0; il < hp.n_layer; ++il) {
        const std::string b = "v.blk." + std::to_string(il) + ".";
        vision_layer & L = w.layers[il];
        L.ln1 = create(b + "ln1.weight", {E}, use::other);
        L.qkv = create(b + "attn_qkv.weight", {E, 3 * E}, use::matmul);
        L.qkv_b = create(b + "attn_qkv.bias", {3 * E}, use::other, false);
        L.out = create(b + "attn_out.weight", {E, E}, use::matmul);
        L.out_b = create(b + "attn_out.bias", {E}, use::other, false);
        L.ln2 = create(b + "ln2.weight", {E}, use::other);
        L.ffn_gate = create(b + "ffn_gate.weight", {E, F}, use::matmul);
        L.ffn_gate_b = create(b + "ffn_gate.bias", {F}, use::other, false);
        L.ffn_up = create(b + "ffn_up.weight", {E, F}, use::matmul);
        L.ffn_up_b = create(b + "ffn_up.bias", {F}, use::other, false);
        L.ffn_down = create(b + "ffn_down.weight", {F, E}, use::matmul);
        L.ffn_down_b = create(b + "ffn_down.bias", {E}, use::other, false);
    }
    w.post_ln = create("v.post_ln.weight", {E}, use::other);
    // Used through a 2-D view (reshape), so it keeps a plain layout.
    w.merge_w = create("mm.patch_merger.weight", {m, m, E, O}, use::other);
    w.merge_b = create("mm.patch_merger.bias", {O}, use::other);
    w.fc = create("mm.model.fc.weight", {O, O}, use::matmul);
    w.fc_b = create("mm.model.fc.bias", {O}, use::other, false);
    w.post_norm = create("mm.post_norm.weight", {O}, use::other);
    w.post_norm_b = create("mm.post_norm.bias", {O}, use::other, false);
    w.gate = create("mm.gate.weight", {O, MF}, use::matmul);
    w.gate_b = create("mm.gate.bias", {MF}, use::other, false);
    w.up = create("mm.up.weight", {O, MF}, use::matmul);
    w.up_b = create("mm.up.bias", {MF}, use::other, false);
    w.down = create("mm.down.weight", {MF, O}, use::matmul);
    w.down_b = create("mm.down.bias", {O}, use::other, false);

    weights->load();
    weight_bytes = weights->bytes();

    // GGUF kernel [p, p, 3, E] = HF [E, 3, p, p] row-major: output e's row is (C, py, px)-flattened,
    // which is the order of a pixel_values patch row, so the kernel is already a [3*p*p, E] matrix.
    const size_t n = (size_t) patch_dim * E;
    auto to_f32 = [&](ggml_tensor * k, std::vector<float> & out) {
        out.resize(n);
        const uint8_t * src = f.tensor_data(ggml_get_name(k));
        if (k->type == GGML_TYPE_F32) std::memcpy(out.data(), src, n * sizeof(float));  // ggml has no F32 to_float
        else ggml_get_type_traits(k->type)->to_float(src, out.data(), (int64_t) n);
    };
    std::vector<float> sum, tmp;
    to_f32(k0, sum);
    to_f32(k1, tmp);
    for (size_t i = 0; i < n; ++i) sum[i] += tmp[i];
    ggml_backend_tensor_set(w.patch_w, sum.data(), 0, n * sizeof(float));

    auto all = backends->all();
    sched.reset(ggml_backend_sched_new(all.data(), nullptr, (int) all.size(), vision_graph_max_nodes(hp), false, true));
    if (!sched) throw error("cannot create the backend scheduler");
    graph_buf.resize(vision_graph_ctx_size(hp));
}

vision_model::vision_model(const std::string & mmproj_path, const vision_params & params) : p_(std::make_unique<impl>()) {
    p_->path = mmproj_path;
    gguf_file f(mmproj_path);
    p_->read_hparams(f);
    p_->load(f, params);
}

vision_model::~vision_model() = default;

const vision_hparams & vision_model::hparams() const { return p_->hp; }
std::string vision_model::devices() const { return p_->backends->describe(); }
size_t vision_model::weight_bytes() const { return p_->weight_bytes; }
std::string vision_model::weights_device() const { return device_of(p_->w.layers.empty() ? p_->w.patch_w : p_->w.layers[0].qkv); }
std::string vision_model::matmul_type() const {
    const ggml_tensor * t = p_->w.layers.empty() ? p_->w.fc : p_->w.layers[0].qkv;
    return ggml_type_name(t->type);
}
std::string vision_model::attention_kernel() const {
    return p_->attn == attn_kernel::avx512 ? "avx512" : p_->attn == attn_kernel::avx2 ? "avx2" : "ggml";
}

resize_params vision_model::resize(int64_t min_pixels, int64_t max_pixels) const {
    resize_params r;
    r.patch_size = (int32_t) p_->hp.patch_size;
    r.merge_size = (int32_t) p_->hp.merge_size;
    r.temporal_patch_size = 2;
    r.min_pixels = min_pixels > 0 ? min_pixels : p_->hp.min_pixels;
    r.max_pixels = max_pixels > 0 ? max_pixels : p_->hp.max_pixels;
    return r;
}

size_t vision_model::compute_bytes(int32_t grid_h, int32_t grid_w) {
    const int32_t m = (int32_t) p_->hp.merge_size;
    if (grid_h <= 0 || grid_w <= 0 || grid_h % m || grid_w % m) {
        throw invalid_argument("compute_bytes: grid must be positive multiples of the merge size " + std::to_string(m));
    }
    std::lock_guard<std::mutex> lock(p_->mu);
    ggml_init_params ip{p_->graph_buf.size(), p_->graph_buf.data(), true};
    ggml_ctx_ptr ctx(ggml_init(ip));
    vision_graph g = build_vision_graph(ctx.get(), p_->hp, p_->w, grid_h, grid_w, p_->attn);
    ggml_backend_sched_reset(p_->sched.get());
    if (!ggml_backend_sched_reserve(p_->sched.get(), g.gf)) throw out_of_memory("cannot plan compute buffers for this grid");
    size_t total = 0;
    for (ggml_backend_t be : p_->backends->all()) total += ggml_backend_sched_get_buffer_size(p_->sched.get(), be);
    return total;
}

std::vector<float> vision_model::encode(const pixel_patches & px) {
    const vision_hparams & hp = p_->hp;
    const int32_t m = (int32_t) hp.merge_size;
    const int32_t patch_dim = 3 * (int32_t) hp.patch_size * (int32_t) hp.patch_size;
    if (px.grid_h <= 0 || px.grid_w <= 0 || px.grid_h % m || px.grid_w % m) {
        throw invalid_argument("encode: grid " + std::to_string(px.grid_h) + " x " + std::to_string(px.grid_w) +
                               " must be positive multiples of the merge size " + std::to_string(m));
    }
    if (px.patch_dim != patch_dim) {
        throw invalid_argument("encode: patch_dim " + std::to_string(px.patch_dim) + ", this model takes 3*" +
                               std::to_string(hp.patch_size) + "*" + std::to_string(hp.patch_size) + " = " + std::to_string(patch_dim));
    }
    const size_t n_patches = (size_t) px.grid_h * px.grid_w;
    if (px.values.size() != n_patches * patch_dim) {
        throw invalid_argument("encode: " + std::to_string(px.values.size()) + " values, expected grid_h*grid_w*patch_dim = " +
                               std::to_string(n_patches * patch_dim));
    }

    std::lock_guard<std::mutex> lock(p_->mu);
    ggml_init_params ip{p_->graph_buf.size(), p_->graph_buf.data(), true};
    ggml_ctx_ptr ctx(ggml_init(ip));
    const attn_kernel attn = p_->attn;
    vision_graph g = build_vision_graph(ctx.get(), hp, p_->w, px.grid_h, px.grid_w, attn);

    // Compute buffers follow the graph: the scheduler grows them for a larger image and keeps them.
    ggml_backend_sched_reset(p_->sched.get());
    if (!ggml_backend_sched_alloc_graph(p_->sched.get(), g.gf)) {
        throw out_of_memory("cannot allocate compute buffers for a " + std::to_string(px.grid_h) + " x " + std::to_string(px.grid_w) +
                            "-patch image; use a smaller max_pixels");
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

    op_profile prof;
    prof.attach(p_->sched.get(), p_->backends->n_threads());
    const bool ok = ggml_backend_sched_graph_compute(p_->sched.get(), g.gf) == GGML_STATUS_SUCCESS;
    prof.report("vision encode");
    if (!ok) throw error("vision graph computation failed");
    std::vector<float> out(ggml_nelements(g.out));
    ggml_backend_tensor_get(g.out, out.data(), 0, out.size() * sizeof(float));
    return out;
}

}  // namespace autoglm
