#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# test_install.sh <build dir> <source dir> <generator> <C++ compiler> [C compiler] [Python interpreter]
# cmake --install into a temporary prefix; the examples configure with find_package(gcomp) and
# -DCMAKE_PREFIX_PATH=<prefix>, build and run; the C example also builds with
# `pkg-config --cflags --libs gcomp`. No installed file may depend on NCCL (loaded at run time). Prints every failed check; exits non-zero on any.
set -u
build="$1"
src="$2"
generator="$3"
cxx="$4"
cc="${5:-}"
[ -n "$cc" ] || cc=cc
python="${6:-}"
[ -n "$python" ] || python=python3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix="$work/prefix"
fail=0
say() { echo "FAILED: $*"; fail=1; }

cmake --install "$build" --prefix "$prefix" > "$work/install.log" 2>&1 || { cat "$work/install.log"; say "cmake --install"; exit 1; }
libdir=$(dirname "$(find "$prefix" -name 'libgcomp.*' | head -1)")
[ -n "$libdir" ] && [ -d "$libdir" ] || { say "no libgcomp installed"; exit 1; }
for f in include/gcomp/gcomp.h include/gcomp/codec.hpp include/gcomp/session.hpp include/gcomp/detail/philox.hpp; do
  [ -f "$prefix/$f" ] || say "missing $f"
done
for f in gcompConfig.cmake gcompConfigVersion.cmake gcompTargets.cmake; do
  [ -f "$libdir/cmake/gcomp/$f" ] || say "missing cmake/gcomp/$f"
done
[ -f "$libdir/pkgconfig/gcomp.pc" ] || say "missing pkgconfig/gcomp.pc"
if [ -n "$(find "$prefix/include" -name 'internal.hpp' -o -name '*.cpp')" ]; then say "host internals installed"; fi
for tool in gcomp-codec gcomp-train; do
  if [ -x "$build/tools/$tool" ] && [ ! -x "$prefix/bin/$tool" ]; then say "$tool not installed"; fi
done
if [ -x "$prefix/bin/gcomp-codec" ]; then "$prefix/bin/gcomp-codec" list > /dev/null || say "installed gcomp-codec does not run"; fi
# NCCL is loaded at run time by the nccl backend: no installed file may make it a dependency.
nccl_dep='libnccl|nccl\.so|-lnccl'
if grep -qiE "$nccl_dep" "$libdir"/cmake/gcomp/gcompTargets*.cmake "$libdir/pkgconfig/gcomp.pc"; then
  say "the installed package names NCCL as a dependency: $(grep -ilE "$nccl_dep" "$libdir"/cmake/gcomp/gcompTargets*.cmake "$libdir/pkgconfig/gcomp.pc" | tr '\n' ' ')"
fi
if command -v readelf > /dev/null; then
  while IFS= read -r elf; do
    if readelf -d "$elf" 2> /dev/null | grep -q "NEEDED.*libnccl"; then say "$elf links libnccl"; fi
  done < <(find "$prefix" -type f \( -name 'libgcomp.so*' -o -name '_core*.so' -o -path '*/bin/gcomp-*' \))
fi
export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# value_after <file> <label>: the number that follows "<label> " on the first matching line.
value_after() { sed -n "s/.*$2 \([-+0-9.eE]*\).*/\1/p" "$1" | head -1; }
below() { python3 -c "import sys; sys.exit(0 if float('$1') < float('$2') else 1)" 2>/dev/null; }

# C++ example: DIANA on 4 local ranks must reach the exact solution.
if cmake -S "$src/examples/cpp_training" -B "$work/cpp" -G "$generator" -DCMAKE_BUILD_TYPE=Release \
     -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_PREFIX_PATH="$prefix" > "$work/cpp.log" 2>&1 &&
   cmake --build "$work/cpp" >> "$work/cpp.log" 2>&1; then
  "$work/cpp/cpp_training" > "$work/cpp.out" 2>&1 || say "cpp_training exited non-zero"
  cat "$work/cpp.out"
  err=$(value_after "$work/cpp.out" "final relative error")
  [ -n "$err" ] && below "$err" 1e-10 || say "cpp_training: final relative error '$err' is not below 1e-10"
else
  cat "$work/cpp.log"; say "examples/cpp_training does not configure or build against the installed package"
fi

check_c_output() {
  local out="$1" what="$2"
  grep -q "^gcomp library [0-9]*, header [0-9]*$" "$out" || say "$what: no version line"
  grep -q "4000 elements, 2064 payload bytes, 4.128 bits/element" "$out" || say "$what: codec sizes"
  grep -q "^truncated payload: corrupt payload: gcompDecode: " "$out" || say "$what: corrupt payload not reported"
  grep -q "^bad spec: invalid argument: gcompPlanCreate: .*norm=l3 is not one of" "$out" || say "$what: bad spec not reported"
  local rel
  rel=$(value_after "$out" "relative squared error")
  [ -n "$rel" ] && below "$rel" 0.2 || say "$what: codec relative squared error '$rel'"
  rel=$(value_after "$out" "final relative error")
  [ -n "$rel" ] && below "$rel" 1e-6 || say "$what: session final relative error '$rel'"
}

# C example through find_package.
if cmake -S "$src/examples/c_codec" -B "$work/c" -G "$generator" -DCMAKE_BUILD_TYPE=Release \
     -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_C_FLAGS="-Wall -Wextra -Wpedantic -Werror" \
     -DCMAKE_PREFIX_PATH="$prefix" > "$work/c.log" 2>&1 &&
   cmake --build "$work/c" >> "$work/c.log" 2>&1; then
  "$work/c/c_codec" > "$work/c.out" 2>&1 || say "c_codec exited non-zero"
  cat "$work/c.out"
  check_c_output "$work/c.out" "c_codec (find_package)"
else
  cat "$work/c.log"; say "examples/c_codec does not configure or build against the installed package"
fi

# C example through pkg-config.
if command -v pkg-config > /dev/null; then
  export PKG_CONFIG_PATH="$libdir/pkgconfig"
  version=$(pkg-config --modversion gcomp) || say "pkg-config does not find gcomp"
  grep -q "VERSION ${version:-none}" "$src/CMakeLists.txt" || say "gcomp.pc version '$version' differs from the project's"
  # shellcheck disable=SC2046
  if "$cc" -std=c99 -Wall -Wextra -Wpedantic -Werror "$src/examples/c_codec/main.c" \
       $(pkg-config --cflags --libs gcomp) -lm -o "$work/c_codec_pc" > "$work/pc.log" 2>&1; then
    "$work/c_codec_pc" > "$work/pc.out" 2>&1 || say "c_codec (pkg-config) exited non-zero"
    check_c_output "$work/pc.out" "c_codec (pkg-config)"
  else
    cat "$work/pc.log"; say "c_codec does not build with pkg-config --cflags --libs gcomp"
  fi
else
  say "pkg-config not found: install it (apt-get install -y pkg-config) to test gcomp.pc"
fi

# Python package: installed next to its extension under <prefix>/lib/pythonX.Y/site-packages
# (GCOMP_INSTALL_PYTHONDIR), importable with nothing but the prefix on PYTHONPATH.
if compgen -G "$build/python/gcomp/_core*.so" > /dev/null; then
  module=$(find "$prefix" -path '*/gcomp/_core*.so' | head -1)
  if [ -z "$module" ]; then
    say "the Python extension gcomp._core is built but not installed"
  else
    pydir=$(dirname "$(dirname "$module")")
    [ -f "$pydir/gcomp/__init__.py" ] && [ -f "$pydir/gcomp/ddp.py" ] || say "Python sources not installed next to _core"
    if "$python" -c "import numpy" 2> /dev/null; then
      if (cd "$work" && env -u PYTHONPATH PYTHONPATH="$pydir" PYTHONDONTWRITEBYTECODE=1 "$python" -c "
import threading, numpy as np, gcomp
assert gcomp.library_path().startswith('$pydir'), gcomp.library_path()
c = gcomp.Codec('dither:levels=4,norm=linf,block=64', [100, 28], seed=3)
x = np.linspace(-1, 1, 128).astype(np.float32)
y = c.decode(c.encode(x, rank=1, step=2), rank=1, step=2)
assert y.shape == (128,) and np.abs(y - x).max() <= 0.25
comms, out = gcomp.local_group(2), [None, None]
def rank(r):
    s = gcomp.Session(comms[r], 128, algorithm='diana', codec='dither:levels=1,norm=linf', lr=0.5)
    out[r] = s.step(x * (r + 1))
ts = [threading.Thread(target=rank, args=(r,)) for r in range(2)]
[t.start() for t in ts]; [t.join() for t in ts]
assert np.array_equal(out[0], out[1])
print('installed Python package: gcomp', gcomp.__version__, 'from', '$pydir')
") > "$work/py.out" 2>&1; then
        cat "$work/py.out"
      else
        cat "$work/py.out"; say "the installed Python package does not import or run"
      fi
    else
      echo "installed Python package: not run ($python has no NumPy)"
    fi
  fi
fi

[ $fail -eq 0 ] && echo "install + examples: all checks passed"
exit $fail
