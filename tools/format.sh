#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Formats gcomp's C, C++ and CUDA sources with the root .clang-format, or checks that they are.
# Usage: tools/format.sh [--check] [FILE...]   (FILE relative to the repository root)
#   no FILE: every tracked *.c *.h *.cpp *.hpp *.cu *.cuh (git ls-files; outside a git checkout,
#   the same extensions under the source folders).
#   --check: changes nothing; lists the files whose layout differs and exits 1 if there are any
#   (the CTest FormatCheck runs this, with -DGCOMP_FORMAT_CHECK=ON).
# The tree is laid out by clang-format 14 (Debian 12's; tools/setup.sh installs it); other major
# versions lay out some constructs differently, so --check refuses them. CLANG_FORMAT names the
# binary to use.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
check=0
if [ "${1:-}" = --check ]; then check=1; shift; fi
case "${1:-}" in -h | --help) sed -n '3,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
want_major=14
cf=${CLANG_FORMAT:-}
if [ -z "$cf" ]; then
  for c in clang-format-$want_major clang-format; do
    if command -v "$c" > /dev/null; then cf=$c; break; fi
  done
fi
if [ -z "$cf" ] || ! command -v "$cf" > /dev/null; then
  echo "format.sh: clang-format not found (tools/setup.sh installs clang-format-$want_major; CLANG_FORMAT names another)" >&2
  exit 2
fi
version=$("$cf" --version)
major=$(sed -E 's/.*version ([0-9]+).*/\1/' <<< "$version")
if [ "$major" != "$want_major" ]; then
  msg="format.sh: $cf is clang-format $major; the tree is laid out by clang-format $want_major"
  if [ $check = 1 ]; then echo "$msg (install clang-format-$want_major or set CLANG_FORMAT)" >&2; exit 2; fi
  echo "$msg; formatting anyway" >&2
fi
cd "$root"
files=()
if [ $# -gt 0 ]; then
  files=("$@")
elif git -C "$root" rev-parse --is-inside-work-tree > /dev/null 2>&1; then
  mapfile -t files < <(git ls-files -- '*.c' '*.h' '*.cpp' '*.hpp' '*.cu' '*.cuh')
else
  mapfile -t files < <(find bench cuda examples host include python tests tools -type f \
    \( -name '*.c' -o -name '*.h' -o -name '*.cpp' -o -name '*.hpp' -o -name '*.cu' -o -name '*.cuh' \) | sort)
fi
if [ ${#files[@]} -eq 0 ]; then echo "format.sh: no sources found" >&2; exit 2; fi
if [ $check = 0 ]; then
  "$cf" -i --style=file "${files[@]}"
  echo "format.sh: formatted ${#files[@]} files with $cf ($major)"
  exit 0
fi
bad=()
for f in "${files[@]}"; do
  if ! "$cf" --style=file "$f" | cmp -s - "$f"; then bad+=("$f"); fi
done
if [ ${#bad[@]} -gt 0 ]; then
  echo "format.sh: ${#bad[@]} of ${#files[@]} files are not laid out as .clang-format asks (tools/format.sh FILE fixes one):"
  printf '  %s\n' "${bad[@]}"
  for f in "${bad[@]:0:3}"; do "$cf" --style=file "$f" | diff -u --label "$f" --label "$f (formatted)" "$f" - | head -20 || true; done
  exit 1
fi
echo "format.sh: all ${#files[@]} files formatted ($cf $major)"
