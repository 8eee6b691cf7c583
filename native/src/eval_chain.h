// Several observers of one graph computation behind the scheduler's single eval callback: the
// importance-matrix collector, the tensor dump and the profiler can all be on at once. Each observer
// is asked about every node; the scheduler stops after a node any of them wants, and then each
// observer that wants it is called, in the order they were added (the profiler last, so the others'
// work is billed to the node they observe).
// ref: ggml-backend.h ggml_backend_sched_eval_callback (ask, then observe, per node).
#pragma once

#include <vector>

#include "ggml-backend.h"

namespace autoglm {

class eval_chain {
public:
    void clear() { observers_.clear(); }
    // `cb` must answer an "ask" without side effects that matter when asked twice: a follow-up call
    // asks again to find out which observers wanted the node.
    void add(ggml_backend_sched_eval_callback cb, void * user) { observers_.push_back({cb, user}); }
    // Installs the chain on `sched`, or no callback at all when it is empty (whole splits then run at
    // once, the fast path).
    void install(ggml_backend_sched_t sched) {
        if (observers_.empty()) ggml_backend_sched_set_eval_callback(sched, nullptr, nullptr);
        else ggml_backend_sched_set_eval_callback(sched, &eval_chain::call, this);
    }

private:
    struct observer {
        ggml_backend_sched_eval_callback cb;
        void * user;
    };
    static bool call(ggml_tensor * t, bool ask, void * user) {
        auto * self = static_cast<eval_chain *>(user);
        bool any = false;
        for (const observer & o : self->observers_) {
            if (ask) any = o.cb(t, true, o.user) || any;
            else if (o.cb(t, true, o.user) && !o.cb(t, false, o.user)) return false;  // false: stop the graph
        }
        return ask ? any : true;
    }
    std::vector<observer> observers_;
};

}  // namespace autoglm
