# Provides the targets ggml / ggml-base / ggml-cpu, from one of three places:
#   1. -DAUTOGLM_USE_SYSTEM_GGML=ON    find_package(ggml)
#   2. -DAUTOGLM_GGML_SOURCE_DIR=...    a local ggml source tree
#   3. default                          the pinned sdist's ggml, via cmake/fetch_ggml.py (cached per user)
# Backends pass straight through: -DGGML_CUDA=ON / -DGGML_METAL=ON / -DGGML_VULKAN=ON.

if(AUTOGLM_USE_SYSTEM_GGML)
  find_package(ggml REQUIRED)
  message(STATUS "autoglm-gguf: using system ggml ${ggml_VERSION}")
  return()
endif()

if(AUTOGLM_GGML_SOURCE_DIR)
  set(_ggml_dir "${AUTOGLM_GGML_SOURCE_DIR}")
  if(NOT EXISTS "${_ggml_dir}/CMakeLists.txt")
    message(FATAL_ERROR "AUTOGLM_GGML_SOURCE_DIR=${_ggml_dir} is not a ggml source tree (no CMakeLists.txt)")
  endif()
else()
  find_package(Python COMPONENTS Interpreter REQUIRED)
  execute_process(
    COMMAND "${Python_EXECUTABLE}" "${CMAKE_CURRENT_LIST_DIR}/fetch_ggml.py" --tree ggml
    OUTPUT_VARIABLE _ggml_dir
    ERROR_VARIABLE _ggml_err
    RESULT_VARIABLE _ggml_rc
    OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT _ggml_rc EQUAL 0)
    message(FATAL_ERROR "${_ggml_err}")
  endif()
endif()

message(STATUS "autoglm-gguf: ggml source: ${_ggml_dir}")
set(GGML_STATIC OFF CACHE BOOL "")
set(GGML_BUILD_TESTS OFF CACHE BOOL "" FORCE)
set(GGML_BUILD_EXAMPLES OFF CACHE BOOL "" FORCE)
if(AUTOGLM_CPU_VARIANTS)
  # ggml as shared libraries and its backends as loadable modules: one CPU module per ISA level.
  set(BUILD_SHARED_LIBS ON CACHE BOOL "" FORCE)
  set(GGML_BACKEND_DL ON CACHE BOOL "" FORCE)
  set(GGML_CPU_ALL_VARIANTS ON CACHE BOOL "" FORCE)
else()
  # Static, position-independent ggml linked into our extension; no tests/examples of ggml.
  set(BUILD_SHARED_LIBS OFF CACHE BOOL "" FORCE)
  set(GGML_BACKEND_DL OFF CACHE BOOL "" FORCE)
  set(GGML_CPU_ALL_VARIANTS OFF CACHE BOOL "" FORCE)
endif()
set(GGML_CCACHE OFF CACHE BOOL "")
# llamafile's tiled sgemm for F32/F16/BF16/Q8_0 matmuls on the CPU (what llama.cpp's own build enables):
# about 1.8x on the F16 vision tower's matmuls. The quantized decoder matmuls go through the repacked
# layouts either way.
# Metal (on by default on Apple): the kernels are compiled into the library, since ggml is linked
# statically into our extension and there is no directory beside a binary to find a default.metallib in.
set(GGML_METAL_EMBED_LIBRARY ON CACHE BOOL "ggml: embed the Metal library")
if(NOT DEFINED GGML_LLAMAFILE)
  set(GGML_LLAMAFILE_DEFAULT ON)
endif()
add_subdirectory("${_ggml_dir}" "${CMAKE_BINARY_DIR}/ggml" EXCLUDE_FROM_ALL)

if(AUTOGLM_CPU_VARIANTS)
  # Our own file names for ggml's two libraries: llama-cpp-python ships a libggml-base.so.0 too, and
  # the dynamic linker would hand whichever was loaded first to both (same SONAME).
  set_target_properties(ggml PROPERTIES OUTPUT_NAME autoglm-ggml INSTALL_RPATH "$ORIGIN")
  set_target_properties(ggml-base PROPERTIES OUTPUT_NAME autoglm-ggml-base)
  set(AUTOGLM_GGML_MODULES "")
  foreach(_b IN LISTS GGML_AVAILABLE_BACKENDS)
    if(TARGET ${_b})
      set_target_properties(${_b} PROPERTIES INSTALL_RPATH "$ORIGIN")
      list(APPEND AUTOGLM_GGML_MODULES ${_b})
    endif()
  endforeach()
  message(STATUS "autoglm-gguf: ggml backend modules: ${AUTOGLM_GGML_MODULES}")
endif()
