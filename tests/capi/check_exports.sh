#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# check_exports.sh static|shared <library file> <gcomp.h> [<support library file>]
# Every function that gcomp.h declares with GCOMP_EXPORT must be a defined global (T) symbol of the
# library; for a shared library, in its dynamic symbol table (nm -D), i.e. actually exported.
# With a support library (gcomp_support: problem loaders, the Newton solver, report formatting,
# test inputs), none of its functions may be defined in the library: they belong to the tools.
set -u
kind="$1"
lib="$2"
header="$3"
support="${4:-}"
names=$(grep -E '^GCOMP_EXPORT ' "$header" | grep -oE '\bgcomp[A-Za-z0-9_]+\(' | tr -d '(' | sort -u)
if [ -z "$names" ]; then
  echo "FAILED: no GCOMP_EXPORT declarations found in $header"
  exit 1
fi
if [ "$kind" = shared ]; then
  symbols=$(nm -D --defined-only "$lib")
else
  symbols=$(nm --defined-only "$lib" 2>/dev/null)
fi
fail=0
count=0
for n in $names; do
  count=$((count + 1))
  if ! grep -qE "^[0-9a-f]+ T ${n}\$" <<<"$symbols"; then
    echo "FAILED: $n is not an exported function of $lib"
    fail=1
  fi
done
# No C++ mangling on the C entry points: every gcomp* symbol of the library is one gcomp.h declares.
for s in $(grep -oE ' T gcomp[A-Za-z0-9_]+$' <<<"$symbols" | awk '{print $2}' | sort -u); do
  if ! grep -qx "$s" <<<"$names"; then
    echo "FAILED: $lib exports $s, which gcomp.h does not declare"
    fail=1
  fi
done
if [ -n "$support" ]; then
  own=$(nm --defined-only "$support" 2>/dev/null | awk '$2 == "T" {print $3}' | sort -u)
  if [ -z "$own" ]; then
    echo "FAILED: no functions found in $support"
    fail=1
  fi
  all=$(nm --defined-only "$lib" 2>/dev/null | awk '$2 == "T" {print $3}' | sort -u)
  [ -n "$all" ] || all=$(nm -D --defined-only "$lib" | awk '$2 == "T" {print $3}' | sort -u)
  for s in $(comm -12 <(echo "$own") <(echo "$all")); do
    echo "FAILED: $lib defines $(c++filt "$s"), which belongs to the tools' support library $support"
    fail=1
  done
  [ $fail -eq 0 ] && echo "none of the $(echo "$own" | wc -l) functions of $support is defined in $lib"
fi
[ $fail -eq 0 ] && echo "all $count C entry points of gcomp.h are exported by $lib ($kind)"
exit $fail
