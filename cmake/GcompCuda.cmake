# SPDX-License-Identifier: Apache-2.0
# GCOMP_CUDA=AUTO|ON|OFF. AUTO enables CUDA when a CUDA compiler is found. The kernels compile on
# machines without a GPU; GPU tests then skip at run time.
set(GCOMP_HAVE_CUDA OFF)
if(NOT GCOMP_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 90)
    endif()
    enable_language(CUDA)
    # CMake 3.25 knows no C++20 dialect flag for nvcc; nvcc 12+ accepts -std=c++20. Newer CMake
    # defines these itself.
    if(NOT DEFINED CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
      set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
      set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
    endif()
    set(CMAKE_CUDA_STANDARD 20)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    find_package(CUDAToolkit REQUIRED)
    set(GCOMP_HAVE_CUDA ON)
  elseif(GCOMP_CUDA STREQUAL "ON")
    message(FATAL_ERROR "GCOMP_CUDA=ON but no CUDA compiler was found")
  endif()
endif()
