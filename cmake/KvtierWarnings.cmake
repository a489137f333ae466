# Warning and sanitizer flags shared by every kvtier target (applied through kvtier_options).
add_library(kvtier_options INTERFACE)
target_compile_options(kvtier_options INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wno-missing-field-initializers>)
if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  # Checks the ABSL_GUARDED_BY / ABSL_EXCLUSIVE_LOCKS_REQUIRED annotations.
  target_compile_options(kvtier_options INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-Wthread-safety>)
endif()
if(KVTIER_WERROR)
  target_compile_options(kvtier_options INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-Werror>)
endif()

if(KVTIER_BUILD_FUZZ)
  # libFuzzer targets (fuzz/): clang only. Everything they link is built with ASan + UBSan and
  # libFuzzer's coverage instrumentation (fuzzer-no-link); fuzz/CMakeLists.txt links the
  # targets with -fsanitize=fuzzer. KVTIER_SANITIZE is forced to address for the rest of the
  # configure, so the shared library and the Python module are treated as in an ASan build.
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang" OR NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "KVTIER_BUILD_FUZZ=ON needs clang (libFuzzer), not "
            "${CMAKE_CXX_COMPILER_ID}: configure with -DCMAKE_C_COMPILER=clang "
            "-DCMAKE_CXX_COMPILER=clang++ (scripts/fuzz.sh does)")
  endif()
  if(NOT KVTIER_SANITIZE STREQUAL "" AND NOT KVTIER_SANITIZE STREQUAL "address")
    message(FATAL_ERROR "KVTIER_BUILD_FUZZ=ON builds with ASan; KVTIER_SANITIZE='${KVTIER_SANITIZE}' "
            "cannot be combined with it")
  endif()
  set(KVTIER_SANITIZE address)
  add_compile_options("$<$<COMPILE_LANGUAGE:C,CXX>:-fsanitize=fuzzer-no-link>")
endif()

if(KVTIER_SANITIZE STREQUAL "address")
  set(_kvtier_san -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
elseif(KVTIER_SANITIZE STREQUAL "thread")
  set(_kvtier_san -fsanitize=thread -fno-omit-frame-pointer)
elseif(NOT KVTIER_SANITIZE STREQUAL "")
  message(FATAL_ERROR "KVTIER_SANITIZE must be '', 'address' or 'thread', not '${KVTIER_SANITIZE}'")
endif()
if(_kvtier_san)
  # Applied globally so GoogleTest main, examples, benches and C tests are instrumented too.
  add_compile_options("$<$<COMPILE_LANGUAGE:C,CXX>:${_kvtier_san}>")  # C: the C API tests
  add_link_options(${_kvtier_san})
endif()
