# cmake -DHEADERS_DIR=include/kvtier -P check_public_includes.cmake
# Fails unless every #include of every public header is <standard header>, "absl/..." or
# "kvtier/...": the installed headers must not need RocksDB, liburing, CUDA or internal headers.
file(GLOB headers "${HEADERS_DIR}/*.h")
if(NOT headers)
  message(FATAL_ERROR "no headers in '${HEADERS_DIR}'")
endif()
set(bad "")
foreach(header ${headers})
  file(STRINGS "${header}" includes REGEX "^[ \t]*#[ \t]*include")
  foreach(line ${includes})
    if(line MATCHES "#[ \t]*include[ \t]*\"(absl|kvtier)/[^\"]+\"")
      continue()
    elseif(line MATCHES "#[ \t]*include[ \t]*<([a-z_]+|std(def|int|bool|io|lib|arg)\\.h)>")
      continue()  # <vector>, <cstdint>, <stddef.h>, ...: the standard library
    endif()
    string(APPEND bad "  ${header}: ${line}\n")
  endforeach()
endforeach()
if(bad)
  message(FATAL_ERROR "public headers include what an installed kvtier does not ship:\n${bad}")
endif()
list(LENGTH headers n)
message(STATUS "${n} public headers include only the standard library, Abseil and kvtier/")
