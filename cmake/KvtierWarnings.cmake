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
