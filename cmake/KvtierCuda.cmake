# Decides whether the CUDA device implementation is built (KVTIER_CUDA = AUTO | ON | OFF).
# AUTO builds it when nvcc is found (PATH or /usr/local/cuda). Kernels are built for sm_90
# plus PTX for newer GPUs; the runtime is linked statically so binaries carry to a GPU machine
# that has only the driver.
set(KVTIER_HAVE_CUDA OFF)
if(NOT KVTIER_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX} AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 90)  # sm_90 SASS + compute_90 PTX
    endif()
    enable_language(CUDA)
    # CMake 3.25 does not know nvcc's C++20 dialect flag (and would otherwise inherit
    # CXX_STANDARD 20 and fail), so .cu files are C++17: they hold kernels only and include
    # no kvtier headers but kernels/*_internal.h, which are plain C++17.
    set(CMAKE_CUDA_STANDARD 17)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    find_package(CUDAToolkit REQUIRED)
    set(KVTIER_HAVE_CUDA ON)
  elseif(KVTIER_CUDA STREQUAL "ON")
    message(FATAL_ERROR "KVTIER_CUDA=ON but no CUDA compiler (nvcc) was found")
  endif()
endif()
message(STATUS "kvtier: CUDA device implementation: ${KVTIER_HAVE_CUDA}")
