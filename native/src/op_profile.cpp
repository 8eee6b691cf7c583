#include "op_profile.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "ggml.h"

namespace autoglm {

bool op_profile::enabled() {
    static const bool on = [] {
        const char * v = std::getenv("AUTOGLM_PROFILE");
        return v && *v && *v != '0';
    }();
    return on;
}

void op_profile::attach(ggml_backend_sched_t sched) {
    if (!enabled()) return;
    started_ = false;
    ggml_backend_sched_set_eval_callback(sched, &op_profile::eval_cb, this);
}

bool op_profile::eval_cb(ggml_tensor * t, bool ask, void * user) {
    auto * self = static_cast<op_profile *>(user);
    const auto now = std::chrono::steady_clock::now();
    if (ask) {
        // The first question comes before anything ran: start the clock there.
        if (!self->started_) {
            self->started_ = true;
            self->last_ = now;
        }
        return true;  // stop after every node
    }
    // Called once the nodes up to t have run: everything since the last stop belongs to t's op.
    std::string key = ggml_op_desc(t);
    row & r = self->by_op_[key];
    r.ms += std::chrono::duration<double, std::milli>(now - self->last_).count();
    r.n += 1;
    self->last_ = std::chrono::steady_clock::now();
    return true;
}

void op_profile::report(const char * what) {
    if (!enabled() || by_op_.empty()) return;
    std::vector<std::pair<std::string, row>> rows(by_op_.begin(), by_op_.end());
    std::sort(rows.begin(), rows.end(), [](const auto & a, const auto & b) { return a.second.ms > b.second.ms; });
    double total = 0;
    for (const auto & r : rows) total += r.second.ms;
    std::fprintf(stderr, "autoglm profile [%s]: %.1f ms in %zu op kinds\n", what, total, rows.size());
    for (const auto & r : rows) {
        std::fprintf(stderr, "  %-18s %10.1f ms %5.1f%%  x%d\n", r.first.c_str(), r.second.ms, 100.0 * r.second.ms / total,
                     r.second.n);
    }
    by_op_.clear();
}

}  // namespace autoglm
