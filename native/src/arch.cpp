#include "arch.h"

#include <cstdio>
#include <cstring>
#include <iterator>

#include "error.h"

namespace autoglm::arch {

namespace {

#define AUTOGLM_ARCH_ENTRY(id, str) {#id, str},
constexpr entry KEYS[] = {AUTOGLM_GGUF_KEYS(AUTOGLM_ARCH_ENTRY)};
constexpr entry TENSORS[] = {AUTOGLM_GGUF_TENSORS(AUTOGLM_ARCH_ENTRY)};
#undef AUTOGLM_ARCH_ENTRY

}  // namespace

const char * name(key k) { return KEYS[(size_t) k].gguf; }

std::string name(tensor t, int block) {
    const char * fmt = TENSORS[(size_t) t].gguf;
    const bool per_block = std::strstr(fmt, "%d") != nullptr;
    if (per_block != (block >= 0)) {
        // A programming error in a loader, not a property of the file.
        throw error(std::string("tensor name ") + TENSORS[(size_t) t].id + (per_block ? " needs" : " takes no") + " block index");
    }
    if (!per_block) return fmt;
    char buf[128];
    std::snprintf(buf, sizeof buf, fmt, block);
    return buf;
}

const entry * keys(size_t & n) {
    n = std::size(KEYS);
    return KEYS;
}

const entry * tensors(size_t & n) {
    n = std::size(TENSORS);
    return TENSORS;
}

}  // namespace autoglm::arch
