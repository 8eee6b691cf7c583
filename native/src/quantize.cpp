#include "quantize.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "error.h"

namespace autoglm {

// ggml_quantize_requires_imatrix leaves out IQ1_M, whose quantizer asserts on a missing matrix too.
static bool needs_imatrix(ggml_type t) { return ggml_quantize_requires_imatrix(t) || t == GGML_TYPE_IQ1_M; }

// Types a model file may be written in: ggml can produce them from F32 rows. (Deprecated and
// removed type ids have no traits, the repacked CPU layouts are not file types.)
static bool is_storage_type(ggml_type t) {
    if (t == GGML_TYPE_F32) return true;
    const ggml_type_traits * tr = ggml_get_type_traits(t);
    // The imatrix-only types (IQ2_XXS, IQ2_XS, IQ1_*) have no reference row quantizer, only ggml_quantize_chunk.
    return tr && tr->blck_size > 0 && tr->type_size > 0 && tr->to_float != nullptr &&
           (tr->from_float_ref != nullptr || needs_imatrix(t));
}

std::string storage_type_name(ggml_type type) {
    std::string n = ggml_type_name(type);
    for (char & c : n) c = (char) std::tolower((unsigned char) c);
    return n;
}

ggml_type parse_storage_type(const std::string & name) {
    std::string n;
    for (char c : name) n.push_back((char) std::tolower((unsigned char) c));
    std::string known;
    for (int i = 0; i < GGML_TYPE_COUNT; ++i) {
        const ggml_type t = (ggml_type) i;
        if (!is_storage_type(t)) continue;
        if (storage_type_name(t) == n) return t;
        known += (known.empty() ? "" : ", ") + storage_type_name(t);
    }
    throw invalid_argument("unknown storage type '" + name + "': expected one of " + known);
}

size_t storage_row_size(ggml_type type, int64_t n_per_row) {
    const int64_t blck = ggml_blck_size(type);
    if (n_per_row <= 0 || n_per_row % blck != 0) {
        throw invalid_argument(std::string("row length ") + std::to_string(n_per_row) + " is not a positive multiple of " +
                               std::to_string(blck) + ", the block size of " + ggml_type_name(type));
    }
    return ggml_row_size(type, n_per_row);
}

// First non-finite element in [begin, end), or -1.
static int64_t find_non_finite(const float * x, int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
        if (!std::isfinite(x[i])) return i;
    }
    return -1;
}

void quantize_rows(ggml_type type, const float * src, void * dst, int64_t nrows, int64_t n_per_row, int n_threads,
                   const float * imatrix, bool validate) {
    storage_row_size(type, n_per_row);  // validates the row length against the block size
    AUTOGLM_CHECK_ARG(nrows >= 0, "negative row count");
    if (nrows == 0) return;
    AUTOGLM_CHECK_ARG(
        imatrix || !needs_imatrix(type),
        std::string(ggml_type_name(type)) + " needs an importance matrix (compute one with `autoglm-gguf imatrix`)");
    if (imatrix) {
        const int64_t bad_im = find_non_finite(imatrix, 0, n_per_row);
        AUTOGLM_CHECK_ARG(bad_im < 0, "the importance matrix has a non-finite value at column " + std::to_string(bad_im));
    }

    if (n_threads <= 0) n_threads = (int) std::max(1u, std::thread::hardware_concurrency());
    // At least ~64k elements per thread: thread start-up costs more than quantizing less.
    const int64_t min_rows = std::max<int64_t>(1, (1 << 16) / n_per_row);
    n_threads = (int) std::max<int64_t>(1, std::min<int64_t>(n_threads, (nrows + min_rows - 1) / min_rows));

    if (type == GGML_TYPE_F32) {
        // Still checked for non-finite values so every storage type behaves the same.
        const int64_t bad = find_non_finite(src, 0, nrows * n_per_row);
        if (bad >= 0) {
            throw invalid_argument("non-finite value at row " + std::to_string(bad / n_per_row) + ", column " +
                                   std::to_string(bad % n_per_row));
        }
        std::copy(src, src + nrows * n_per_row, (float *) dst);
        return;
    }

    ggml_quantize_init(type);  // builds the IQ types' grids once, before the threads share them

    const size_t row_bytes = ggml_row_size(type, n_per_row);
    std::vector<int64_t> bad(n_threads, -1);
    std::vector<char> invalid(n_threads, 0);
    auto work = [&](int t) {
        const int64_t r0 = nrows * t / n_threads;
        const int64_t r1 = nrows * (t + 1) / n_threads;
        if (r0 >= r1) return;
        bad[t] = find_non_finite(src, r0 * n_per_row, r1 * n_per_row);
        if (bad[t] >= 0) return;
        ggml_quantize_chunk(type, src, dst, r0 * n_per_row, r1 - r0, n_per_row, imatrix);
        invalid[t] = validate && !ggml_validate_row_data(type, (const char *) dst + r0 * row_bytes, (r1 - r0) * row_bytes);
    };
    std::vector<std::thread> pool;
    pool.reserve(n_threads - 1);
    for (int t = 1; t < n_threads; ++t) pool.emplace_back(work, t);
    work(0);
    for (auto & th : pool) th.join();

    for (int64_t b : bad) {
        if (b >= 0) {
            throw invalid_argument("non-finite value (NaN or Inf) at row " + std::to_string(b / n_per_row) + ", column " +
                                   std::to_string(b % n_per_row) + "; refusing to quantize it");
        }
    }
    for (char v : invalid) {
        if (v) throw error(std::string("quantizing to ") + ggml_type_name(type) + " produced invalid blocks (non-finite scales)");
    }
}

}  // namespace autoglm
