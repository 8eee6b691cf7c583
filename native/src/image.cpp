// Image preprocessing (see image.h). The goal is bit-identical output to transformers'
// Glm4vImageProcessorPil, which is what the C API and the Python package must agree on:
//  - smart_resize replays HF's Python arithmetic: the same IEEE double operations in the same order,
//    Python's round() (half to even) and int() (truncation), so every size gives the same (h, w);
//  - resize_bicubic reimplements Pillow's separable fixed-point resampler (Resample.c semantics:
//    double-precision kernel weights, 22-bit integer coefficients, 8-bit intermediate image);
//  - normalization replays numpy's dtype path: u8 -> float64 * (1/255) -> float32, then
//    (x - mean) / std in float32.
// This file is compiled with -ffp-contract=off (native/CMakeLists.txt): a fused multiply-add would
// round the kernel positions differently from Pillow's x86-64 build and move pixels by one level.
#include "image.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "error.h"

namespace autoglm {

namespace {

// Python's round(float) -> int: nearest, ties to even. x - floor(x) is exact for the magnitudes
// we see (|x| < 2^52), so the tie test is exact too.
double py_round(double x) {
    const double r = std::floor(x);
    const double frac = x - r;
    if (frac > 0.5) return r + 1.0;
    if (frac < 0.5) return r;
    return std::fmod(r, 2.0) == 0.0 ? r : r + 1.0;
}

int32_t checked_dim(double v, const char * what) {
    if (!(v >= 1.0 && v <= (double) std::numeric_limits<int32_t>::max())) {
        throw invalid_argument(std::string("smart_resize: resized ") + what + " " + std::to_string(v) +
                               " is out of range (image or pixel budget too large)");
    }
    return (int32_t) v;
}

}  // namespace

std::array<int32_t, 2> smart_resize(int32_t height, int32_t width, const resize_params & p) {
    if (height <= 0 || width <= 0) {
        throw invalid_argument("smart_resize: empty image (" + std::to_string(width) + "x" + std::to_string(height) +
                               "); width and height must be >= 1");
    }
    if (p.patch_size <= 0 || p.merge_size <= 0 || p.temporal_patch_size <= 0) {
        throw invalid_argument("smart_resize: patch_size, merge_size and temporal_patch_size must be >= 1");
    }
    if (p.max_pixels <= 0 || p.min_pixels < 0) {
        throw invalid_argument("smart_resize: need max_pixels > 0 and min_pixels >= 0, got min_pixels " +
                               std::to_string(p.min_pixels) + ", max_pixels " + std::to_string(p.max_pixels));
    }
    // HF: factor = patch_size * merge_size; the image processor calls smart_resize with
    // num_frames = temporal_factor = temporal_patch_size, so a still image is budgeted as 2 frames
    // and t_bar = round(num_frames / temporal_factor) * temporal_factor = temporal_patch_size.
    const double factor = (double) p.patch_size * p.merge_size;
    const double num_frames = p.temporal_patch_size;
    const double t_bar = p.temporal_patch_size;

    // Python ints are exact; here the sizes are doubles. Every product below stays exact as long as
    // it is < 2^53 (an image of ~10^15 pixels), which makes the arithmetic identical to Python's
    // (int / int true division is correctly rounded, as is double division of exact operands).
    double h = height, w = width;
    if (h < factor || w < factor) {
        const double scale = std::max(factor / h, factor / w);
        h = std::trunc(h * scale);  // Python int(): truncation, e.g. 3 * (28/3) may give 27
        w = std::trunc(w * scale);
    }
    const double ratio = std::max(h, w) / std::min(h, w);
    if (ratio > 200.0) {
        throw invalid_argument("smart_resize: absolute aspect ratio must be at most 200, got " + std::to_string(ratio) +
                               " for a " + std::to_string(width) + "x" + std::to_string(height) + " image");
    }
    double h_bar = py_round(h / factor) * factor;
    double w_bar = py_round(w / factor) * factor;
    const double max_px = (double) p.max_pixels, min_px = (double) p.min_pixels;
    if (t_bar * h_bar * w_bar > max_px) {
        const double beta = std::sqrt((num_frames * h * w) / max_px);
        h_bar = std::max(factor, std::floor(h / beta / factor) * factor);
        w_bar = std::max(factor, std::floor(w / beta / factor) * factor);
    } else if (t_bar * h_bar * w_bar < min_px) {
        const double beta = std::sqrt(min_px / (num_frames * h * w));
        h_bar = std::ceil(h * beta / factor) * factor;
        w_bar = std::ceil(w * beta / factor) * factor;
    }
    return {checked_dim(h_bar, "height"), checked_dim(w_bar, "width")};
}

namespace {

// Pillow's fixed point: 32 bits minus 8 for the result minus 2 for overshoot of the signed kernel.
constexpr int k_precision_bits = 32 - 8 - 2;

// Pillow's bicubic kernel (a = -0.5), written with the same operation order as Resample.c.
double bicubic_kernel(double x) {
    constexpr double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

// Integer filter taps for one axis: output i reads `count[i]` inputs from `first[i]`.
struct axis_taps {
    int ksize = 0;
    std::vector<int32_t> first, count;
    std::vector<int32_t> coef;  // [out_size * ksize], fixed point with k_precision_bits
};

// Pillow precompute_coeffs + normalize_coeffs_8bpc for the box (0, in_size). The kernel is
// stretched by the scale when downscaling (antialiasing), the weights of each output are normalized
// to sum to 1 in double, then rounded half away from zero to fixed point.
axis_taps make_taps(int in_size, int out_size) {
    axis_taps t;
    const double scale = (double) (float) in_size / out_size;  // Pillow's box is float
    const double filterscale = scale < 1.0 ? 1.0 : scale;
    const double support = 2.0 * filterscale;  // bicubic support 2
    t.ksize = (int) std::ceil(support) * 2 + 1;
    t.first.resize(out_size);
    t.count.resize(out_size);
    t.coef.assign((size_t) out_size * t.ksize, 0);
    std::vector<double> k(t.ksize);
    const double inv_filterscale = 1.0 / filterscale;
    for (int xx = 0; xx < out_size; xx++) {
        const double center = (xx + 0.5) * scale;  // Pillow adds in0 = 0.0f first: no change
        int xmin = (int) (center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int) (center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        double ww = 0.0;
        for (int x = 0; x < xmax; x++) {
            // (x + xmin) is an int sum in Pillow, converted to double before subtracting center.
            const double w = bicubic_kernel(((double) (x + xmin) - center + 0.5) * inv_filterscale);
            k[x] = w;
            ww += w;
        }
        for (int x = 0; x < xmax; x++) {
            const double kx = ww != 0.0 ? k[x] / ww : k[x];
            const double fixed = kx * (1 << k_precision_bits);
            t.coef[(size_t) xx * t.ksize + x] = (int32_t) (kx < 0 ? -0.5 + fixed : 0.5 + fixed);  // round half away
        }
        t.first[xx] = xmin;
        t.count[xx] = xmax;
    }
    return t;
}

inline uint8_t clip8(int32_t acc) {
    // Pillow: lookup of acc >> 22 clamped to [0, 255] (arithmetic shift; negative sums give 0).
    if (acc < 0) return 0;
    const int32_t v = acc >> k_precision_bits;
    return (uint8_t) (v > 255 ? 255 : v);
}

// Rows [0, h) of a w_in-wide RGB image -> w_out-wide rows (Pillow's horizontal pass, 8-bit output).
void resample_horizontal(const uint8_t * src, int w_in, int h, const axis_taps & t, int w_out, uint8_t * dst) {
    const int32_t half = 1 << (k_precision_bits - 1);
    for (int y = 0; y < h; y++) {
        const uint8_t * in = src + (size_t) y * w_in * 3;
        uint8_t * out = dst + (size_t) y * w_out * 3;
        for (int xx = 0; xx < w_out; xx++) {
            const int32_t * k = &t.coef[(size_t) xx * t.ksize];
            const uint8_t * px = in + (size_t) t.first[xx] * 3;
            int32_t s0 = half, s1 = half, s2 = half;
            for (int x = 0; x < t.count[xx]; x++) {
                s0 += px[3 * x + 0] * k[x];
                s1 += px[3 * x + 1] * k[x];
                s2 += px[3 * x + 2] * k[x];
            }
            out[3 * xx + 0] = clip8(s0);
            out[3 * xx + 1] = clip8(s1);
            out[3 * xx + 2] = clip8(s2);
        }
    }
}

// A w-wide RGB image -> h_out rows (Pillow's vertical pass). Row-at-a-time accumulation: the integer
// sums are the same as Pillow's per-pixel loop, in a cache-friendly order.
void resample_vertical(const uint8_t * src, int w, const axis_taps & t, int h_out, uint8_t * dst) {
    const size_t row = (size_t) w * 3;
    std::vector<int32_t> acc(row);
    for (int yy = 0; yy < h_out; yy++) {
        std::fill(acc.begin(), acc.end(), 1 << (k_precision_bits - 1));
        const int32_t * k = &t.coef[(size_t) yy * t.ksize];
        for (int y = 0; y < t.count[yy]; y++) {
            const uint8_t * in = src + (size_t) (t.first[yy] + y) * row;
            const int32_t ky = k[y];
            for (size_t i = 0; i < row; i++) acc[i] += in[i] * ky;
        }
        uint8_t * out = dst + (size_t) yy * row;
        for (size_t i = 0; i < row; i++) out[i] = clip8(acc[i]);
    }
}

void check_image(const rgb_image & img, const char * fn) {
    if (img.width <= 0 || img.height <= 0) {
        throw invalid_argument(std::string(fn) + ": empty image (" + std::to_string(img.width) + "x" +
                               std::to_string(img.height) + ")");
    }
    if (img.data.size() != (size_t) img.width * img.height * 3) {
        throw invalid_argument(std::string(fn) + ": image data has " + std::to_string(img.data.size()) +
                               " bytes, expected 3 * width * height = " + std::to_string((size_t) img.width * img.height * 3));
    }
}

}  // namespace

rgb_image resize_bicubic(const rgb_image & src, int32_t width, int32_t height) {
    check_image(src, "resize_bicubic");
    if (width <= 0 || height <= 0) {
        throw invalid_argument("resize_bicubic: target size " + std::to_string(width) + "x" + std::to_string(height) +
                               " must be at least 1x1");
    }
    rgb_image out;
    out.width = width;
    out.height = height;
    const int w_in = src.width, h_in = src.height;
    const bool need_h = width != w_in, need_v = height != h_in;
    if (!need_h && !need_v) {  // Pillow returns a copy
        out.data = src.data;
        return out;
    }
    // Pillow runs the vertical pass first only when the height shrinks by more than twice as many
    // pixels as the width does; the order matters because the intermediate image is rounded to 8 bits.
    const bool horizontal_first = !((h_in - height) > 0 && (h_in - height) > (w_in - width) * 2);
    out.data.resize((size_t) width * height * 3);
    if (need_h && need_v) {
        const axis_taps th = make_taps(w_in, width), tv = make_taps(h_in, height);
        std::vector<uint8_t> tmp;
        if (horizontal_first) {
            // Only the source rows the vertical pass reads (Pillow does the same; values unchanged).
            const int y0 = tv.first[0];
            const int y1 = tv.first[height - 1] + tv.count[height - 1];
            tmp.resize((size_t) width * (y1 - y0) * 3);
            resample_horizontal(src.data.data() + (size_t) y0 * w_in * 3, w_in, y1 - y0, th, width, tmp.data());
            axis_taps tv_shift = tv;
            for (auto & f : tv_shift.first) f -= y0;
            resample_vertical(tmp.data(), width, tv_shift, height, out.data.data());
        } else {
            tmp.resize((size_t) w_in * height * 3);
            resample_vertical(src.data.data(), w_in, tv, height, tmp.data());
            resample_horizontal(tmp.data(), w_in, height, th, width, out.data.data());
        }
    } else if (need_h) {
        resample_horizontal(src.data.data(), w_in, h_in, make_taps(w_in, width), width, out.data.data());
    } else {
        resample_vertical(src.data.data(), w_in, make_taps(h_in, height), height, out.data.data());
    }
    return out;
}

pixel_patches preprocess(const rgb_image & img, const resize_params & p, const std::array<float, 3> & mean,
                         const std::array<float, 3> & std) {
    check_image(img, "preprocess");
    for (int c = 0; c < 3; c++) {
        if (!std::isfinite(mean[c]) || !std::isfinite(std[c]) || std[c] == 0.0f) {
            throw invalid_argument("preprocess: mean must be finite and std finite and non-zero (channel " + std::to_string(c) +
                                   ")");
        }
    }
    const auto hw = smart_resize(img.height, img.width, p);
    rgb_image resized;
    const rgb_image * src = &img;
    if (hw[0] != img.height || hw[1] != img.width) {
        resized = resize_bicubic(img, hw[1], hw[0]);
        src = &resized;
    }

    // HF: rescale = (u8 as float64) * (1/255) cast to float32; normalize = (x - mean) / std with
    // mean and std as float32 arrays, in float32. 256 levels per channel: a lookup table.
    float lut[3][256];
    const double rescale = 1.0 / 255.0;
    for (int c = 0; c < 3; c++) {
        for (int v = 0; v < 256; v++) {
            const float x = (float) ((double) v * rescale);
            lut[c][v] = (x - mean[c]) / std[c];
        }
    }

    const int ps = p.patch_size, ms = p.merge_size;
    pixel_patches out;
    out.grid_h = src->height / ps;
    out.grid_w = src->width / ps;
    out.patch_dim = 3 * ps * ps;
    out.values.resize((size_t) out.grid_h * out.grid_w * out.patch_dim);
    const size_t stride = (size_t) src->width * 3;
    float * dst = out.values.data();
    // Merge-window order (spec C.3): block row, block column, then the ms x ms patches inside the
    // block in raster order; inside a patch: channel, row, column (HF's (C, py, px), one frame).
    for (int by = 0; by < out.grid_h / ms; by++) {
        for (int bx = 0; bx < out.grid_w / ms; bx++) {
            for (int dy = 0; dy < ms; dy++) {
                for (int dx = 0; dx < ms; dx++) {
                    const int y0 = (by * ms + dy) * ps, x0 = (bx * ms + dx) * ps;
                    for (int c = 0; c < 3; c++) {
                        for (int py = 0; py < ps; py++) {
                            const uint8_t * row = src->data.data() + (size_t) (y0 + py) * stride + (size_t) x0 * 3 + c;
                            for (int px = 0; px < ps; px++) *dst++ = lut[c][row[3 * px]];
                        }
                    }
                }
            }
        }
    }
    return out;
}

}  // namespace autoglm
