# SPDX-License-Identifier: Apache-2.0
# Installation and the CMake/pkg-config packages (docs/c-api.md "Installing and finding gcomp"):
#   lib/libgcomp.{a,so}, include/gcomp/** (public headers only), bin/gcomp-codec, bin/gcomp-train,
#   lib/cmake/gcomp/gcomp{Config,ConfigVersion,Targets}.cmake (target gcomp::gcomp),
#   lib/pkgconfig/gcomp.pc (relocatable: paths relative to the .pc file).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(GCOMP_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/gcomp CACHE STRING
    "Where gcompConfig.cmake is installed, relative to the prefix")

install(TARGETS gcomp EXPORT gcompTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/gcomp DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.h" PATTERN "*.hpp")
get_target_property(_gcomp_type gcomp TYPE)
foreach(_gcomp_tool gcomp-codec gcomp-train)
  if(TARGET ${_gcomp_tool})
    if(_gcomp_type STREQUAL "SHARED_LIBRARY")
      # Installed tools find libgcomp.so relative to themselves, wherever the prefix is.
      file(RELATIVE_PATH _gcomp_bin_to_lib /_p/${CMAKE_INSTALL_BINDIR} /_p/${CMAKE_INSTALL_LIBDIR})
      set_target_properties(${_gcomp_tool} PROPERTIES INSTALL_RPATH "$ORIGIN/${_gcomp_bin_to_lib}")
    endif()
    install(TARGETS ${_gcomp_tool} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  endif()
endforeach()

install(EXPORT gcompTargets NAMESPACE gcomp:: FILE gcompTargets.cmake DESTINATION ${GCOMP_INSTALL_CMAKEDIR})

if(_gcomp_type STREQUAL "STATIC_LIBRARY")
  set(GCOMP_PACKAGE_STATIC ON)
else()
  set(GCOMP_PACKAGE_STATIC OFF)
endif()
set(GCOMP_PACKAGE_MPI ${GCOMP_HAVE_MPI})
set(GCOMP_PACKAGE_CUDA ${GCOMP_HAVE_CUDA})
set(GCOMP_PACKAGE_HWY ${GCOMP_HAVE_HWY})
if(GCOMP_HAVE_NCCL)
  set(GCOMP_PACKAGE_NCCL ON)
else()
  set(GCOMP_PACKAGE_NCCL OFF)
endif()
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/gcompConfig.cmake.in
  ${PROJECT_BINARY_DIR}/gcompConfig.cmake INSTALL_DESTINATION ${GCOMP_INSTALL_CMAKEDIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/gcompConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/gcompConfig.cmake ${PROJECT_BINARY_DIR}/gcompConfigVersion.cmake
  DESTINATION ${GCOMP_INSTALL_CMAKEDIR})

# pkg-config. A static libgcomp needs the C++ runtime and gcomp's own dependencies on the link
# line of every consumer, so they go to Libs; a shared one records them in Libs.private.
set(_gcomp_pc_deps "-lstdc++ -lm")
find_package(Threads REQUIRED)
if(CMAKE_THREAD_LIBS_INIT)
  string(APPEND _gcomp_pc_deps " ${CMAKE_THREAD_LIBS_INIT}")
else()
  string(APPEND _gcomp_pc_deps " -pthread")
endif()
if(GCOMP_HAVE_MPI)
  set(MPI_CXX_SKIP_MPICXX ON CACHE BOOL "gcomp uses the C API of MPI only")
  find_package(MPI QUIET COMPONENTS CXX)
  foreach(_gcomp_lib IN LISTS MPI_CXX_LIBRARIES)
    string(APPEND _gcomp_pc_deps " ${_gcomp_lib}")
  endforeach()
endif()
if(GCOMP_HAVE_HWY)
  string(APPEND _gcomp_pc_deps " -lhwy")
endif()
if(GCOMP_HAVE_CUDA)
  string(APPEND _gcomp_pc_deps " -L${CUDAToolkit_LIBRARY_DIR} -lcudart")
endif()
# NCCL is not a dependency: the nccl backend loads it at run time, with libdl.
if((GCOMP_NVTX_INCLUDE_DIR OR GCOMP_HAVE_NCCL) AND CMAKE_DL_LIBS)
  string(APPEND _gcomp_pc_deps " -l${CMAKE_DL_LIBS}")
endif()
if(GCOMP_PACKAGE_STATIC)
  set(GCOMP_PC_LIBS_EXTRA " ${_gcomp_pc_deps}")
  set(GCOMP_PC_LIBS_PRIVATE "")
else()
  set(GCOMP_PC_LIBS_EXTRA "")
  set(GCOMP_PC_LIBS_PRIVATE "${_gcomp_pc_deps}")
endif()
file(RELATIVE_PATH GCOMP_PC_PREFIX_FROM_PCDIR /_gcomp_prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig /_gcomp_prefix)
string(REGEX REPLACE "/$" "" GCOMP_PC_PREFIX_FROM_PCDIR "${GCOMP_PC_PREFIX_FROM_PCDIR}")
configure_file(${PROJECT_SOURCE_DIR}/cmake/gcomp.pc.in ${PROJECT_BINARY_DIR}/gcomp.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/gcomp.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
