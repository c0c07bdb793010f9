# SPDX-License-Identifier: Apache-2.0
# Warning flags and floating-point rules shared by every gcomp target.
# Contraction is off on both compilers so that a*b+c rounds the same on host and device
# (STYLE.md §2): the CPU reference and the kernels must produce byte-identical payloads.
function(gcomp_target_defaults target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wno-sign-conversion
                              $<$<CXX_COMPILER_ID:GNU>:-Wno-restrict>
                              -ffp-contract=off -fno-fast-math>
    $<$<COMPILE_LANGUAGE:CUDA>:--fmad=false -Xcompiler=-Wall,-Wextra,-ffp-contract=off>)
  if(GCOMP_WERROR)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Werror>
                                             $<$<COMPILE_LANGUAGE:CUDA>:-Werror=all-warnings -Xcompiler=-Werror>)
  endif()
endfunction()
