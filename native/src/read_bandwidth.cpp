#include "read_bandwidth.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "error.h"

#if defined(__x86_64__) && defined(__GNUC__)
#    define AUTOGLM_READ_X86 1
#    include <immintrin.h>
#endif

namespace autoglm {

namespace {

constexpr size_t words_per_step = 16;  // 128 bytes: four 256-bit loads

#if AUTOGLM_READ_X86
__attribute__((target("avx2"))) uint64_t sum_avx2(const uint64_t * p, size_t n) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i < n; i += words_per_step) {
        a0 = _mm256_add_epi64(a0, _mm256_load_si256((const __m256i *) (p + i)));
        a1 = _mm256_add_epi64(a1, _mm256_load_si256((const __m256i *) (p + i + 4)));
        a2 = _mm256_add_epi64(a2, _mm256_load_si256((const __m256i *) (p + i + 8)));
        a3 = _mm256_add_epi64(a3, _mm256_load_si256((const __m256i *) (p + i + 12)));
    }
    const __m256i s = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
    alignas(32) uint64_t lanes[4];
    _mm256_store_si256((__m256i *) lanes, s);
    return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}
#endif

uint64_t sum_portable(const uint64_t * p, size_t n) {
    uint64_t s[4] = {0, 0, 0, 0};
    for (size_t i = 0; i < n; i += 4) {
        for (int j = 0; j < 4; ++j) s[j] += p[i + j];
    }
    return s[0] + s[1] + s[2] + s[3];
}

using sum_fn = uint64_t (*)(const uint64_t *, size_t);

sum_fn best_sum() {
#if AUTOGLM_READ_X86
    if (__builtin_cpu_supports("avx2")) return sum_avx2;
#endif
    return sum_portable;
}

struct aligned_delete {
    void operator()(uint64_t * p) const { ::operator delete[](p, std::align_val_t(64)); }
};

}  // namespace

double read_bandwidth_gbs(int threads, int64_t mib, int reps) {
    if (threads < 1 || mib < 1 || reps < 1) {
        throw invalid_argument("read_bandwidth: threads, mib and reps must be at least 1 (got " + std::to_string(threads) + ", " +
                               std::to_string(mib) + ", " + std::to_string(reps) + ")");
    }
    // each thread's part, a whole number of steps, at least 32 MiB: beyond its share of any cache, also
    // where many threads split a small total
    constexpr size_t min_part_words = (size_t) 32 << 20 >> 3;
    const size_t words =
        std::max<size_t>(min_part_words, (size_t) mib * (1 << 20) / 8 / (size_t) threads) / words_per_step * words_per_step;
    std::vector<std::unique_ptr<uint64_t[], aligned_delete>> parts;
    try {
        for (int t = 0; t < threads; ++t) {
            parts.emplace_back(static_cast<uint64_t *>(::operator new[](words * 8, std::align_val_t(64))));
        }
    } catch (const std::bad_alloc &) {
        throw out_of_memory("read_bandwidth: cannot allocate " + std::to_string((words * 8 * (size_t) threads) >> 20) +
                            " MiB; pass a smaller mib or fewer threads");
    }
    const sum_fn sum = best_sum();
    // The calling thread reads part 0 itself: with as many threads as cores, a caller that only waited
    // would take a core from one of them.
    std::atomic<int> go{0}, done{0};
    std::atomic<uint64_t> sink{0};
    auto touch = [&](int t) {
        uint64_t * p = parts[(size_t) t].get();
        for (size_t i = 0; i < words; ++i) p[i] = i;  // first touch by the reading thread: its pages near it
    };
    auto worker = [&](int t) {
        touch(t);
        done.fetch_add(1);
        for (int rep = 1; rep <= reps; ++rep) {
            while (go.load(std::memory_order_acquire) < rep) {}
            sink.fetch_add(sum(parts[(size_t) t].get(), words), std::memory_order_relaxed);
            done.fetch_add(1, std::memory_order_acq_rel);
        }
    };
    std::vector<std::thread> pool;
    try {
        for (int t = 1; t < threads; ++t) pool.emplace_back(worker, t);
    } catch (const std::exception &) {  // no more threads: release the started ones, never leave them waiting
        go.store(reps + 1);
        for (auto & th : pool) th.join();
        throw error("read_bandwidth: cannot start " + std::to_string(threads) + " threads; pass fewer");
    }
    touch(0);
    while (done.load() < threads - 1) std::this_thread::yield();
    double best = 0;
    for (int rep = 1; rep <= reps; ++rep) {
        const auto t0 = std::chrono::steady_clock::now();
        go.store(rep, std::memory_order_release);
        sink.fetch_add(sum(parts[0].get(), words), std::memory_order_relaxed);
        while (done.load(std::memory_order_acquire) < (threads - 1) * (rep + 1)) {}
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        best = std::max(best, (double) words * 8 * threads / s / 1e9);
    }
    for (auto & th : pool) th.join();
    (void) sink.load();
    return best;
}

}  // namespace autoglm
