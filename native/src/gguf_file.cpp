#include "gguf_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "error.h"

namespace autoglm {

gguf_file::gguf_file(const std::string & path) : path_(path) {
    struct stat st{};
    if (::stat(path.c_str(), &st) != 0) {
        throw file_error(path + ": cannot open (" + std::strerror(errno) + ")");
    }
    if (!S_ISREG(st.st_mode)) throw file_error(path + ": not a regular file");
    size_ = (size_t) st.st_size;

    gguf_init_params params{/*no_alloc=*/true, /*ctx=*/&meta_};
    gguf_ = gguf_init_from_file(path.c_str(), params);
    if (!gguf_) {
        throw file_error(path + ": not a valid GGUF file (bad magic/version, or truncated metadata)");
    }
    // Every tensor must lie inside the file: a truncated download is reported here, not as garbage later.
    const size_t data_off = gguf_get_data_offset(gguf_);
    for (int64_t i = 0; i < gguf_get_n_tensors(gguf_); ++i) {
        const size_t end = data_off + gguf_get_tensor_offset(gguf_, i) + gguf_get_tensor_size(gguf_, i);
        if (end > size_) {
            const std::string name = gguf_get_tensor_name(gguf_, i);
            gguf_free(gguf_);
            ggml_free(meta_);
            gguf_ = nullptr;
            meta_ = nullptr;
            throw file_error(path + ": truncated: tensor '" + name + "' ends at byte " + std::to_string(end) +
                             " but the file has " + std::to_string(size_) + " bytes (incomplete download?)");
        }
    }
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);  // kept open for read(): not for child processes
    if (fd >= 0) {
        void * m = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd, 0);
        if (m != MAP_FAILED) map_ = m;
        if (map_) {
            fd_ = fd;
        } else {
            ::close(fd);
        }
    }
    if (!map_) {
        gguf_free(gguf_);
        ggml_free(meta_);
        throw file_error(path + ": cannot memory-map the file (" + std::strerror(errno) + ")");
    }
}

gguf_file::~gguf_file() {
    if (map_) ::munmap(map_, size_);
    if (fd_ >= 0) ::close(fd_);
    if (gguf_) gguf_free(gguf_);
    if (meta_) ggml_free(meta_);
}

void gguf_file::release(const void * data, size_t n) const {
    const uintptr_t page = (uintptr_t) sysconf(_SC_PAGESIZE);
    const uintptr_t lo = ((uintptr_t) data + page - 1) / page * page;  // whole pages inside the range only:
    const uintptr_t hi = ((uintptr_t) data + n) / page * page;         // neighbours may still be needed
    if (hi > lo) ::madvise((void *) lo, hi - lo, MADV_DONTNEED);
}

void gguf_file::prefetch(const void * data, size_t n) const {
    const uintptr_t page = (uintptr_t) sysconf(_SC_PAGESIZE);
    const uintptr_t lo = (uintptr_t) data / page * page;
    if (n > 0) ::madvise((void *) lo, (uintptr_t) data + n - lo, MADV_WILLNEED);
}

void gguf_file::read(const void * data, void * dst, size_t n) const {
    const uint8_t * src = (const uint8_t *) data;
    size_t done = 0;
    while (done < n && fd_ >= 0) {
        const ssize_t got = ::pread(fd_, (uint8_t *) dst + done, n - done, (off_t) (src + done - (const uint8_t *) map_));
        if (got <= 0) {
            if (got < 0 && errno == EINTR) continue;
            break;
        }
        done += (size_t) got;
    }
    if (done < n) std::memcpy((uint8_t *) dst + done, src + done, n - done);
}

bool gguf_file::has(const std::string & key) const { return gguf_find_key(gguf_, key.c_str()) >= 0; }

int64_t gguf_file::key_id(const std::string & key) const {
    const int64_t id = gguf_find_key(gguf_, key.c_str());
    if (id < 0) throw file_error(path_ + ": missing metadata key '" + key + "'");
    return id;
}

static bool is_int_type(gguf_type t) {
    switch (t) {
        case GGUF_TYPE_UINT8:
        case GGUF_TYPE_INT8:
        case GGUF_TYPE_UINT16:
        case GGUF_TYPE_INT16:
        case GGUF_TYPE_UINT32:
        case GGUF_TYPE_INT32:
        case GGUF_TYPE_UINT64:
        case GGUF_TYPE_INT64: return true;
        default: return false;
    }
}

static int64_t int_value(const gguf_context * g, int64_t id) {
    switch (gguf_get_kv_type(g, id)) {
        case GGUF_TYPE_UINT8: return gguf_get_val_u8(g, id);
        case GGUF_TYPE_INT8: return gguf_get_val_i8(g, id);
        case GGUF_TYPE_UINT16: return gguf_get_val_u16(g, id);
        case GGUF_TYPE_INT16: return gguf_get_val_i16(g, id);
        case GGUF_TYPE_UINT32: return gguf_get_val_u32(g, id);
        case GGUF_TYPE_INT32: return gguf_get_val_i32(g, id);
        case GGUF_TYPE_UINT64: return (int64_t) gguf_get_val_u64(g, id);
        case GGUF_TYPE_INT64: return gguf_get_val_i64(g, id);
        default: return 0;
    }
}

std::string gguf_file::get_str(const std::string & key) const {
    const int64_t id = key_id(key);
    if (gguf_get_kv_type(gguf_, id) != GGUF_TYPE_STRING) {
        throw file_error(path_ + ": metadata '" + key + "' should be a string, is " +
                         gguf_type_name(gguf_get_kv_type(gguf_, id)));
    }
    return gguf_get_val_str(gguf_, id);
}

std::string gguf_file::get_str(const std::string & key, const std::string & def) const { return has(key) ? get_str(key) : def; }

uint32_t gguf_file::get_u32(const std::string & key) const {
    const int64_t id = key_id(key);
    if (!is_int_type(gguf_get_kv_type(gguf_, id))) {
        throw file_error(path_ + ": metadata '" + key + "' should be an integer, is " +
                         gguf_type_name(gguf_get_kv_type(gguf_, id)));
    }
    const int64_t v = int_value(gguf_, id);
    if (v < 0 || v > (int64_t) UINT32_MAX)
        throw file_error(path_ + ": metadata '" + key + "' = " + std::to_string(v) + " is out of range");
    return (uint32_t) v;
}

uint32_t gguf_file::get_u32(const std::string & key, uint32_t def) const { return has(key) ? get_u32(key) : def; }

float gguf_file::get_f32(const std::string & key) const {
    const int64_t id = key_id(key);
    const gguf_type t = gguf_get_kv_type(gguf_, id);
    if (t == GGUF_TYPE_FLOAT32) return gguf_get_val_f32(gguf_, id);
    if (t == GGUF_TYPE_FLOAT64) return (float) gguf_get_val_f64(gguf_, id);
    if (is_int_type(t)) return (float) int_value(gguf_, id);
    throw file_error(path_ + ": metadata '" + key + "' should be a number, is " + gguf_type_name(t));
}

float gguf_file::get_f32(const std::string & key, float def) const { return has(key) ? get_f32(key) : def; }

bool gguf_file::get_bool(const std::string & key, bool def) const {
    if (!has(key)) return def;
    const int64_t id = key_id(key);
    if (gguf_get_kv_type(gguf_, id) != GGUF_TYPE_BOOL) throw file_error(path_ + ": metadata '" + key + "' should be a bool");
    return gguf_get_val_bool(gguf_, id);
}

std::vector<int32_t> gguf_file::get_i32_array(const std::string & key) const {
    const int64_t id = key_id(key);
    if (gguf_get_kv_type(gguf_, id) != GGUF_TYPE_ARRAY) throw file_error(path_ + ": metadata '" + key + "' should be an array");
    const gguf_type at = gguf_get_arr_type(gguf_, id);
    // The element type is checked before the data is touched: gguf_get_arr_data asserts on strings.
    if (!is_int_type(at)) {
        throw file_error(path_ + ": metadata '" + key + "' should be an integer array, holds " + gguf_type_name(at));
    }
    const size_t n = gguf_get_arr_n(gguf_, id);
    const void * data = gguf_get_arr_data(gguf_, id);
    std::vector<int32_t> out(n);
    for (size_t i = 0; i < n; ++i) {
        int64_t v = 0;
        switch (at) {
            case GGUF_TYPE_INT32: v = ((const int32_t *) data)[i]; break;
            case GGUF_TYPE_UINT32: v = ((const uint32_t *) data)[i]; break;
            case GGUF_TYPE_INT64: v = ((const int64_t *) data)[i]; break;
            case GGUF_TYPE_UINT64: {
                const uint64_t u = ((const uint64_t *) data)[i];
                v = u > (uint64_t) INT64_MAX ? INT64_MAX : (int64_t) u;
                break;
            }
            case GGUF_TYPE_INT16: v = ((const int16_t *) data)[i]; break;
            case GGUF_TYPE_UINT16: v = ((const uint16_t *) data)[i]; break;
            case GGUF_TYPE_INT8: v = ((const int8_t *) data)[i]; break;
            default: v = ((const uint8_t *) data)[i]; break;
        }
        if (v < INT32_MIN || v > INT32_MAX) {
            throw file_error(path_ + ": metadata '" + key + "' element " + std::to_string(i) + " = " + std::to_string(v) +
                             " is out of the 32-bit range");
        }
        out[i] = (int32_t) v;
    }
    return out;
}

std::vector<float> gguf_file::get_f32_array(const std::string & key) const {
    const int64_t id = key_id(key);
    if (gguf_get_kv_type(gguf_, id) != GGUF_TYPE_ARRAY || gguf_get_arr_type(gguf_, id) != GGUF_TYPE_FLOAT32) {
        throw file_error(path_ + ": metadata '" + key + "' should be a float32 array");
    }
    const float * data = (const float *) gguf_get_arr_data(gguf_, id);
    return std::vector<float>(data, data + gguf_get_arr_n(gguf_, id));
}

std::vector<std::string> gguf_file::get_str_array(const std::string & key) const {
    const int64_t id = key_id(key);
    if (gguf_get_kv_type(gguf_, id) != GGUF_TYPE_ARRAY || gguf_get_arr_type(gguf_, id) != GGUF_TYPE_STRING) {
        throw file_error(path_ + ": metadata '" + key + "' should be a string array");
    }
    const size_t n = gguf_get_arr_n(gguf_, id);
    std::vector<std::string> out;
    out.reserve(n);
    for (size_t i = 0; i < n; ++i) out.emplace_back(gguf_get_arr_str(gguf_, id, i));
    return out;
}

ggml_tensor * gguf_file::tensor(const std::string & name) const { return ggml_get_tensor(meta_, name.c_str()); }

const uint8_t * gguf_file::tensor_data(const std::string & name) const {
    const int64_t id = gguf_find_tensor(gguf_, name.c_str());
    if (id < 0) return nullptr;
    return (const uint8_t *) map_ + gguf_get_data_offset(gguf_) + gguf_get_tensor_offset(gguf_, id);
}

uint32_t gguf_file::n_tensors() const { return (uint32_t) gguf_get_n_tensors(gguf_); }

}  // namespace autoglm
