// The C API (include/autoglm.h), part 3: the vision projector, image embeddings, and generation from
// prompts with image slots. Raw pixels in (any stride, RGB/RGBA/gray), the same preprocessing as the
// Python API (image.h), embeddings cached per vision handle by content.
#include "c_api_internal.h"

#include <cstring>
#include <string>
#include <vector>

#include "image.h"
#include "image_prompt.h"
#include "prompt_layout.h"

namespace autoglm::capi {

struct vision_state {
    std::unique_ptr<autoglm::vision_model> vm;
    std::unique_ptr<autoglm::image_embedder> embedder;  // its cache: by content, bounded by cache_bytes
};

}  // namespace autoglm::capi

using namespace autoglm::capi;

namespace {

// Straight-alpha "over" onto opaque white in Pillow's integer arithmetic (Image.alpha_composite with a
// white background, what the Python API does for RGBA input), so both APIs see the same pixels.
uint8_t over_white(uint32_t c, uint32_t a) {
    if (a == 0) return 255;
    const uint32_t tmp = 128u * (c * a + 255u * (255u - a)) + (0x80u << 7);
    return (uint8_t) ((((tmp >> 8) + tmp) >> 8) >> 7);
}

autoglm::rgb_image to_rgb(const autoglm_image & im) {
    require(im.pixels, "image.pixels");
    if (im.width <= 0 || im.height <= 0) {
        throw autoglm::invalid_argument("image is " + std::to_string(im.width) + "x" + std::to_string(im.height) +
                                        " pixels; width and height must be positive");
    }
    if (im.channels != 1 && im.channels != 3 && im.channels != 4) {
        throw autoglm::invalid_argument("image.channels is " + std::to_string(im.channels) +
                                        "; expected 1 (gray), 3 (RGB) or 4 (RGBA)");
    }
    if (im.stride < (size_t) im.width * im.channels) {
        throw autoglm::invalid_argument("image.stride " + std::to_string(im.stride) +
                                        " is less than width * channels = " + std::to_string((size_t) im.width * im.channels));
    }
    autoglm::rgb_image out;
    out.width = im.width;
    out.height = im.height;
    out.data.resize((size_t) im.width * im.height * 3);
    for (int32_t y = 0; y < im.height; ++y) {
        const uint8_t * src = im.pixels + (size_t) y * im.stride;
        uint8_t * dst = out.data.data() + (size_t) y * im.width * 3;
        if (im.channels == 3) {
            std::memcpy(dst, src, (size_t) im.width * 3);
        } else {
            for (int32_t x = 0; x < im.width; ++x, dst += 3) {
                if (im.channels == 1) {
                    dst[0] = dst[1] = dst[2] = src[x];
                } else {
                    const uint8_t * p = src + 4 * (size_t) x;
                    for (int c = 0; c < 3; ++c) dst[c] = over_white(p[c], p[3]);
                }
            }
        }
    }
    return out;
}

// Embeddings of one image, from the embedder's cache or encoded now.
autoglm::image_embedder::result embed(vision_state & vs, const autoglm_image & image, const autoglm_image_params & ip) {
    return vs.embedder->embed(to_rgb(image), ip.min_pixels, ip.max_pixels);
}

}  // namespace

extern "C" {

autoglm_vision_params autoglm_vision_default_params(void) {
    autoglm_vision_params p;
    p.n_threads = 0;
    p.use_gpu = true;
    p.cache_bytes = (size_t) 256 << 20;
    p.matmul_type = "auto";
    return p;
}

autoglm_image_params autoglm_image_default_params(void) {
    autoglm_image_params p;
    p.min_pixels = 0;
    p.max_pixels = 0;
    return p;
}

autoglm_status autoglm_vision_load(const char * path, autoglm_vision_params params, autoglm_vision ** out) {
    return guarded(__func__, [&] {
        require(path, "path");
        require(out, "out");
        if (params.n_threads < 0) throw autoglm::invalid_argument("n_threads must be >= 0");
        autoglm::vision_params vp;
        vp.n_threads = params.n_threads;
        vp.use_gpu = params.use_gpu;
        vp.matmul_type = params.matmul_type ? params.matmul_type : "auto";
        auto st = std::make_shared<vision_state>();
        st->vm = std::make_unique<autoglm::vision_model>(path, vp);
        st->embedder = std::make_unique<autoglm::image_embedder>(*st->vm, params.cache_bytes);
        *out = new autoglm_vision{std::move(st)};
        return AUTOGLM_OK;
    });
}

void autoglm_vision_free(autoglm_vision * vision) { delete vision; }

int32_t autoglm_vision_n_embd(const autoglm_vision * vision) {
    if (!vision) return null_handle(__func__, "vision");
    return (int32_t) vision->s->vm->hparams().n_out;
}

autoglm_status autoglm_image_grid(const autoglm_vision * vision, int32_t width, int32_t height, autoglm_image_params params,
                                  int32_t * rows, int32_t * columns) {
    return guarded(__func__, [&] {
        require(vision, "vision");
        require(rows, "rows");
        require(columns, "columns");
        const autoglm::vision_hparams & hp = vision->s->vm->hparams();
        const auto hw = autoglm::smart_resize(height, width, vision->s->vm->resize(params.min_pixels, params.max_pixels));
        const int32_t unit = (int32_t) (hp.patch_size * hp.merge_size);
        *rows = hw[0] / unit;
        *columns = hw[1] / unit;
        return AUTOGLM_OK;
    });
}

autoglm_status autoglm_image_embed(autoglm_vision * vision, const autoglm_image * image, autoglm_image_params params,
                                   float * embd, size_t embd_max, size_t * n_floats) {
    return guarded(__func__, [&] {
        require(vision, "vision");
        require(image, "image");
        require(n_floats, "n_floats");
        int32_t rows = 0, cols = 0;
        const autoglm::vision_hparams & hp = vision->s->vm->hparams();
        const auto hw =
            autoglm::smart_resize(image->height, image->width, vision->s->vm->resize(params.min_pixels, params.max_pixels));
        rows = hw[0] / (int32_t) (hp.patch_size * hp.merge_size);
        cols = hw[1] / (int32_t) (hp.patch_size * hp.merge_size);
        const size_t need = (size_t) rows * cols * hp.n_out;
        *n_floats = need;
        if (embd_max < need) {
            return fail(__func__, AUTOGLM_ERR_BUFFER_TOO_SMALL,
                        "the embeddings need " + std::to_string(need) + " floats (" + std::to_string(rows) + "x" +
                            std::to_string(cols) + " tokens x " + std::to_string(hp.n_out) + "), embd_max is " +
                            std::to_string(embd_max));
        }
        require(embd, "embd");
        const auto e = embed(*vision->s, *image, params);
        std::memcpy(embd, e.image->embd.data(), need * sizeof(float));
        return AUTOGLM_OK;
    });
}

autoglm_status autoglm_generation_start_images(autoglm_session * session, autoglm_vision * vision, const char * prompt,
                                               const autoglm_image * images, size_t n_images, autoglm_image_params image_params,
                                               autoglm_sampling_params sampling, autoglm_generation_params params,
                                               autoglm_generation ** out) {
    return guarded(__func__, [&] {
        require(session, "session");
        require(vision, "vision");
        require(prompt, "prompt");
        require(out, "out");
        if (n_images) require(images, "images");
        const autoglm::text_model & tm = *session->s->model->tm;
        vision_state & vs = *vision->s;
        if (vs.vm->hparams().n_out != tm.hparams().n_embd) {
            throw autoglm::invalid_argument("the vision projector outputs " + std::to_string(vs.vm->hparams().n_out) +
                                            "-wide embeddings but the text model is " + std::to_string(tm.hparams().n_embd) +
                                            " wide: not this model's mmproj");
        }
        const auto runs = autoglm::tokenize_around_images(tm.tok(), prompt, n_images);
        // The embeddings are shared with the cache; holding them here keeps them valid while this call runs.
        std::vector<std::shared_ptr<const autoglm::embedded_image>> held;
        std::vector<autoglm::prompt_piece> pieces;
        double image_ms = 0.0;
        uint32_t n_image_tokens = 0;
        for (size_t i = 0; i < runs.size(); ++i) {
            if (!runs[i].empty()) pieces.push_back(autoglm::prompt_piece{runs[i]});
            if (i == n_images) break;
            const auto e = embed(vs, images[i], image_params);
            image_ms += e.encode_ms;
            held.push_back(e.image);
            autoglm::prompt_piece ip;
            ip.embd = e.image->embd.data();
            ip.grid_h = e.image->rows;
            ip.grid_w = e.image->cols;
            ip.key = e.image->key;
            n_image_tokens += (uint32_t) (e.image->rows * e.image->cols);
            pieces.push_back(std::move(ip));
        }
        if (pieces.empty()) throw autoglm::invalid_argument("the prompt is empty");
        const autoglm_status st =
            start_generation(session, sampling, params, out,
                             [&](autoglm::session & s, const autoglm::tokenizer & tok, const autoglm::generate_params & gp) {
                                 return std::make_unique<autoglm::generator>(s, tok, pieces, gp);
                             });
        (*out)->image_ms = image_ms;
        (*out)->n_image_tokens = n_image_tokens;
        return st;
    });
}

}  // extern "C"
