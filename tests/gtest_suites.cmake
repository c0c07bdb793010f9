# SPDX-License-Identifier: Apache-2.0
# Included by CTest (TEST_INCLUDE_FILES) for binaries registered with gcomp_add_suite_test():
# lists the binary's tests and registers one CTest test per GoogleTest suite (filter "Suite.*")
# instead of one per case. Used for the device-gated GPU suites, whose ~3,000 cases would
# otherwise start ~3,000 processes that each find no device. The binary exits 77 (CTest "skipped")
# with a one-line reason when it has no device (tests/gpu/gpu_main.cpp).
# Inputs (set by the generated include file): _gcomp_bin, _gcomp_prefix, _gcomp_timeout.
if(NOT EXISTS "${_gcomp_bin}")
  add_test("${_gcomp_prefix}NOT_BUILT" "${_gcomp_bin}")
  return()
endif()
execute_process(COMMAND "${_gcomp_bin}" --gtest_list_tests OUTPUT_VARIABLE _gcomp_list
                RESULT_VARIABLE _gcomp_rc TIMEOUT 60)
if(NOT _gcomp_rc EQUAL 0)
  add_test("${_gcomp_prefix}LIST_FAILED" "${_gcomp_bin}" --gtest_list_tests)
  return()
endif()
string(REPLACE "\n" ";" _gcomp_lines "${_gcomp_list}")
foreach(_line IN LISTS _gcomp_lines)
  # Suite lines start in column 0 and end with '.', optionally followed by "  # TypeParam = ...".
  if(_line MATCHES "^([^ #][^ ]*)\\.( .*)?$")
    set(_suite "${CMAKE_MATCH_1}")
    add_test("${_gcomp_prefix}${_suite}" "${_gcomp_bin}" "--gtest_filter=${_suite}.*")
    set_tests_properties("${_gcomp_prefix}${_suite}" PROPERTIES TIMEOUT "${_gcomp_timeout}" SKIP_RETURN_CODE 77)
  endif()
endforeach()
