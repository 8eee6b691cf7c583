#include "imatrix_collector.h"

#include <cmath>
#include <cstring>

#include "error.h"
#include "ggml-backend.h"

namespace autoglm {

std::string imatrix_weight_name(const char * name) {
    const char * p = std::strchr(name, '#');
    if (!p) return name;
    const char * q = std::strchr(p + 1, '#');
    return q ? std::string(p + 1, q) : std::string(p + 1);
}

bool imatrix_collector::wants(const ggml_tensor * t) const {
    // ref: imatrix.cpp collect_imatrix (ask): plain matrix products with an F32 input of at least 16
    // rows (shorter batches are generation steps, not prompt text), whose weight is a decoder layer's
    // (or the output head's, on request). Our decoder has no MUL_MAT_ID (no experts).
    if (t->op != GGML_OP_MUL_MAT) return false;
    const ggml_tensor *src0 = t->src[0], *src1 = t->src[1];
    if (!src0 || !src1 || src1->type != GGML_TYPE_F32 || src1->ne[1] < 16) return false;
    const std::string w = imatrix_weight_name(src0->name);
    return w.compare(0, 4, "blk.") == 0 || (process_output_ && w == "output.weight");
}

void imatrix_collector::collect(const ggml_tensor * t) noexcept {
    try {
        add(t);
    } catch (const std::exception & e) {
        if (error_.empty()) error_ = e.what();
    } catch (...) {
        if (error_.empty()) error_ = "imatrix: unknown error while collecting statistics";
    }
}

std::string imatrix_collector::take_error() {
    std::string e;
    e.swap(error_);
    return e;
}

void imatrix_collector::add(const ggml_tensor * t) {
    const ggml_tensor *src0 = t->src[0], *src1 = t->src[1];
    const std::string name = imatrix_weight_name(src0->name);
    if (src0->ne[2] != 1 || src0->ne[3] != 1) {
        throw error("imatrix: weight '" + name + "' is not a matrix; stacked (3-D) weights are not supported");
    }
    if (src1->nb[0] != sizeof(float)) throw error("imatrix: the input of '" + name + "' is not row-contiguous");

    // ref: imatrix.cpp collect_imatrix: the input may sit in device memory; read it back first.
    const uint8_t * data;
    if (src1->buffer && ggml_backend_buffer_is_host(src1->buffer)) {
        data = (const uint8_t *) src1->data;
    } else {
        host_.resize(ggml_nbytes(src1));
        ggml_backend_tensor_get(const_cast<ggml_tensor *>(src1), host_.data(), 0, host_.size());
        data = host_.data();
    }

    // Sum this product's rows on the side, so a non-finite batch leaves the totals untouched.
    const int64_t ne0 = src1->ne[0];
    scratch_.assign((size_t) ne0, 0.0);
    for (int64_t i3 = 0; i3 < src1->ne[3]; ++i3) {
        for (int64_t i2 = 0; i2 < src1->ne[2]; ++i2) {
            for (int64_t i1 = 0; i1 < src1->ne[1]; ++i1) {
                const float * x = (const float *) (data + i1 * src1->nb[1] + i2 * src1->nb[2] + i3 * src1->nb[3]);
                for (int64_t j = 0; j < ne0; ++j) scratch_[j] += (double) x[j] * (double) x[j];
            }
        }
    }
    for (int64_t j = 0; j < ne0; ++j) {
        // ref: imatrix.cpp treats non-finite sums as fatal; here the evaluation fails with this message.
        if (!std::isfinite(scratch_[j])) {
            throw error("imatrix: non-finite activations (NaN or Inf) at the input of '" + name + "', column " +
                        std::to_string(j) + ": the model overflows on this prompt, so its statistics are unusable");
        }
    }

    entry & e = stats_[name];
    if (e.sums.empty()) e.sums.assign((size_t) ne0, 0.0);
    if ((int64_t) e.sums.size() != ne0) {
        throw error("imatrix: '" + name + "' was seen with " + std::to_string(e.sums.size()) + " input columns and now " +
                    std::to_string(ne0));
    }
    for (int64_t j = 0; j < ne0; ++j) e.sums[j] += scratch_[j];
    e.count += ggml_nrows(src1);  // ref: imatrix.cpp: one count per row (token) of the input
}

}  // namespace autoglm
