// SPDX-License-Identifier: Apache-2.0
// libgcomp_c.so for the Python package: its code is the whole static gcomp library (linked with
// WHOLE_ARCHIVE by python/CMakeLists.txt); this file only gives the target a source and checks
// that the header the library is built with is the one the package's ctypes layout mirrors.
#include <gcomp/gcomp.h>

static_assert(GCOMP_VERSION_CODE == 100, "python/gcomp/_lib.py mirrors the structs of gcomp.h 0.1.0; update it");
