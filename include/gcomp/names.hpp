// SPDX-License-Identifier: Apache-2.0
/// @file names.hpp
/// @brief The name of every value of the session enums, in one table per enum.
///
/// The C++ API (parse_algorithm(), backend_name(), SessionConfig::canonical()), the C ABI
/// (gcompSessionConfig_t::algorithm and the range checks of its enum fields), the Python module
/// (gcomp._core.ENUM_NAMES and the string-valued SessionConfig fields) and the CLIs (gcomp-train
/// --server, --compensation, --device) all read these tables; none keeps its own list. Each table
/// lists the values in enumerator order (entry i has value i, checked at compile time), and the C
/// enums of gcomp.h have the same numbering (checked in host/capi/session.cpp).
#pragma once

#include <gcomp/error.hpp>
#include <gcomp/session.hpp>

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

namespace gcomp {

/// One value of an enum and its name in configs, on the command line and in Python.
template <class E>
struct EnumName {
  E value;
  const char* name;
};

/// The table of enum @p E: kWhat names the setting in messages, kTable lists every value.
template <class E>
struct EnumNames;

template <>
struct EnumNames<Algorithm> {
  static constexpr const char* kWhat = "algorithm";
  static constexpr EnumName<Algorithm> kTable[] = {
      {Algorithm::kGd, "gd"},
      {Algorithm::kCompressedGd, "compressed-gd"},
      {Algorithm::kSignSgdMv, "signsgd-mv"},
      {Algorithm::kEfSgd, "ef-sgd"},
      {Algorithm::kDiana, "diana"},
      {Algorithm::kDistEfSgdm, "dist-ef-sgdm"},
      {Algorithm::kDoubleSqueeze, "doublesqueeze"},
      {Algorithm::kHessianEc, "hessian-ec"},
  };
};

template <>
struct EnumNames<ServerMode> {
  static constexpr const char* kWhat = "server";
  static constexpr EnumName<ServerMode> kTable[] = {{ServerMode::kReplicated, "replicated"},
                                                    {ServerMode::kSharded, "sharded"}};
};

template <>
struct EnumNames<Backend> {
  static constexpr const char* kWhat = "backend";
  static constexpr EnumName<Backend> kTable[] = {
      {Backend::kCpu, "cpu"}, {Backend::kHostF32, "host-f32"}, {Backend::kCuda, "cuda"}};
};

template <>
struct EnumNames<NonFinitePolicy> {
  static constexpr const char* kWhat = "nonfinite";
  static constexpr EnumName<NonFinitePolicy> kTable[] = {
      {NonFinitePolicy::kError, "error"}, {NonFinitePolicy::kSkip, "skip"}, {NonFinitePolicy::kZero, "zero"}};
};

template <>
struct EnumNames<Regularizer> {
  static constexpr const char* kWhat = "prox";
  static constexpr EnumName<Regularizer> kTable[] = {
      {Regularizer::kNone, "none"}, {Regularizer::kL1, "l1"}, {Regularizer::kL2, "l2"}};
};

template <>
struct EnumNames<Compensation> {
  static constexpr const char* kWhat = "compensation";
  static constexpr EnumName<Compensation> kTable[] = {{Compensation::kNone, "none"},
                                                      {Compensation::kClassical, "classical"},
                                                      {Compensation::kHessian, "hessian"},
                                                      {Compensation::kDiagonal, "diagonal"}};
};

template <>
struct EnumNames<DelayMode> {
  static constexpr const char* kWhat = "delay_mode";
  static constexpr EnumName<DelayMode> kTable[] = {
      {DelayMode::kFixed, "fixed"}, {DelayMode::kTable, "table"}, {DelayMode::kRandom, "random"}};
};

template <>
struct EnumNames<GradType> {
  static constexpr const char* kWhat = "grad_type";
  static constexpr EnumName<GradType> kTable[] = {
      {GradType::kF32, "float32"}, {GradType::kBF16, "bfloat16"}, {GradType::kF16, "float16"}};
};

/// Every value of @p E with its name, in enumerator order.
template <class E>
[[nodiscard]] constexpr std::span<const EnumName<E>> enum_names() {
  return EnumNames<E>::kTable;
}

/// Number of values of @p E.
template <class E>
[[nodiscard]] constexpr int enum_count() {
  return static_cast<int>(std::size(EnumNames<E>::kTable));
}

/// True when entry i of the table of @p E holds the value i (the tables are indexed by value).
template <class E>
[[nodiscard]] constexpr bool enum_table_in_order() {
  for (int i = 0; i < enum_count<E>(); ++i) {
    if (static_cast<int>(EnumNames<E>::kTable[i].value) != i) return false;
  }
  return true;
}

static_assert(enum_table_in_order<Algorithm>() && enum_table_in_order<ServerMode>() && enum_table_in_order<Backend>() &&
              enum_table_in_order<NonFinitePolicy>() && enum_table_in_order<Regularizer>() &&
              enum_table_in_order<Compensation>() && enum_table_in_order<DelayMode>() &&
              enum_table_in_order<GradType>());

/// The name of @p value, or "unknown" for a value outside the enum.
template <class E>
[[nodiscard]] constexpr const char* enum_name(E value) noexcept {
  const int i = static_cast<int>(value);
  return i >= 0 && i < enum_count<E>() ? EnumNames<E>::kTable[i].name : "unknown";
}

/// The names of @p E joined by @p sep ("gd, compressed-gd, ...").
template <class E>
[[nodiscard]] std::string enum_choices(std::string_view sep = ", ") {
  std::string out;
  for (const EnumName<E>& e : enum_names<E>()) {
    if (!out.empty()) out += sep;
    out += e.name;
  }
  return out;
}

/// True when @p name names a value of @p E.
template <class E>
[[nodiscard]] constexpr bool known_name(std::string_view name) {
  for (const EnumName<E>& e : enum_names<E>()) {
    if (name == e.name) return true;
  }
  return false;
}

/// The value named @p name.
/// @throws gcomp::Error gcompErrorInvalidArgument naming the setting, the text and the valid names
///         ("algorithm 'adam' is not one of the valid algorithms: gd, compressed-gd, ...").
template <class E>
[[nodiscard]] E parse_enum(std::string_view name) {
  for (const EnumName<E>& e : enum_names<E>()) {
    if (name == e.name) return e.value;
  }
  GCOMP_FAIL(gcompErrorInvalidArgument, std::string(EnumNames<E>::kWhat) + " '" + std::string(name) +
                                            "' is not one of the valid " + EnumNames<E>::kWhat +
                                            " values: " + enum_choices<E>());
}

}  // namespace gcomp
