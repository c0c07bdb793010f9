// SPDX-License-Identifier: Apache-2.0
/// @file problems.hpp
/// @brief Test problems for the algorithms: LIBSVM data, l2-regularised logistic regression and
/// least squares split over workers, exact optima (spec/ALGORITHMS.md §9.2 "Common setup").
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace gcomp {

/// Sparse rows (CSR) with labels in {-1, +1} (or real targets for least squares).
struct Dataset {
  int64_t rows = 0;
  int64_t cols = 0;  ///< features, including the bias column when added
  std::vector<int64_t> row_ptr{0};
  std::vector<int32_t> col;
  std::vector<double> val;
  std::vector<double> label;
};

/// Largest feature index (and `features`) load_libsvm accepts: columns are int32.
inline constexpr int64_t kMaxLibsvmIndex = int64_t{0x7fffffff} - 1;

/// Reads a LIBSVM text file (label, then 1-based increasing index:value pairs). Two distinct labels
/// map to -1 (smaller) and +1 (larger). `features` > 0 forces the dimension (indices beyond it are
/// an error); otherwise it is the largest index. `bias` appends a constant-1 column.
/// @throws gcomp::Error gcompErrorIo (unreadable) or gcompErrorInvalidArgument (malformed, with line).
Dataset load_libsvm(const std::string& path, int64_t features = 0, bool bias = true);

enum class Loss { kLogistic, kSquared };

/// f(x) = (1/n) sum_i f_i(x), f_i = (1/m_i) sum_{j in i} loss(a_j, b_j; x) + (lambda/2)|x|^2,
/// worker i owning rows [begin_i, end_i) as numpy.array_split does.
class Problem {
 public:
  Problem(const Dataset& data, int workers, Loss loss, double lambda);

  [[nodiscard]] int workers() const { return workers_; }
  [[nodiscard]] int64_t dim() const { return data_->cols; }
  [[nodiscard]] double lambda() const { return lambda_; }
  [[nodiscard]] Loss loss() const { return loss_; }
  [[nodiscard]] int64_t rows_of(int worker) const { return begin_[worker + 1] - begin_[worker]; }

  /// f_i(x), or f(x) for worker = -1.
  [[nodiscard]] double value(std::span<const double> x, int worker = -1) const;
  /// grad f_i(x), or grad f(x) for worker = -1.
  void gradient(std::span<const double> x, int worker, std::span<double> out) const;
  /// Minibatch gradient of f_i on `batch` rows drawn with the given seed (without replacement).
  void stochastic_gradient(std::span<const double> x, int worker, int64_t batch, uint64_t seed,
                           std::span<double> out) const;
  /// (Hessian of f_i at x) v, or of f for worker = -1.
  void hessian_product(std::span<const double> x, int worker, std::span<const double> v, std::span<double> out) const;
  /// diag of the Hessian of f_i (or f) at x.
  void hessian_diagonal(std::span<const double> x, int worker, std::span<double> out) const;

  /// L0 = max_i lambda_max(A_i^T A_i)/(4 m_i) (logistic) or lambda_max((1/n) sum A_i^T A_i / m_i)
  /// (least squares), by power iteration to relative accuracy 1e-12. Up to kDenseMaxDim features
  /// on dense d x d matrices, above with products from the sparse rows (O(d) memory).
  [[nodiscard]] double smoothness_without_reg() const;
  /// Minimiser of f by Newton's method in double, until |grad f| < tol: up to kDenseMaxDim features
  /// with a dense Hessian and Cholesky, above Newton-CG on Hessian-vector products (O(d) memory).
  /// @throws gcomp::Error(gcompErrorInvalidArgument) when it does not converge (e.g. no l2 term).
  [[nodiscard]] std::vector<double> solve(double tol = 1e-12, int max_iters = 50) const;

  /// Largest dimension solved with dense d x d matrices (32 MiB each).
  static constexpr int64_t kDenseMaxDim = 2048;

 private:
  /// row(r, w, inv) for every row r of `worker` (every worker when < 0): w = the row's weight in
  /// the Hessian at x (the loss's second derivative, 1 for least squares), inv = 1 / (its worker's
  /// row count times the number of workers averaged).
  template <class Row>
  void for_each_hessian_row(std::span<const double> x, int worker, Row&& row) const;
  [[nodiscard]] double smoothness_matrix_free() const;
  [[nodiscard]] std::vector<double> solve_matrix_free(double tol, int max_iters) const;

  const Dataset* data_;
  int workers_;
  Loss loss_;
  double lambda_;
  std::vector<int64_t> begin_;
};

}  // namespace gcomp
