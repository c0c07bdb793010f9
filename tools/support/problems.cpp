// SPDX-License-Identifier: Apache-2.0
#include "tools/support/problems.hpp"

#include <gcomp/error.hpp>
#include <gcomp/io.hpp>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <set>

namespace gcomp {

namespace {

double logistic_loss(double z) { return std::max(-z, 0.0) + std::log1p(std::exp(-std::fabs(z))); }
double sigmoid(double z) { return z >= 0 ? 1.0 / (1.0 + std::exp(-z)) : std::exp(z) / (1.0 + std::exp(z)); }

double dot_row(const Dataset& d, int64_t r, std::span<const double> x) {
  double s = 0;
  for (int64_t p = d.row_ptr[r]; p < d.row_ptr[r + 1]; ++p) s += d.val[p] * x[d.col[p]];
  return s;
}

void axpy_row(const Dataset& d, int64_t r, double a, std::span<double> out) {
  for (int64_t p = d.row_ptr[r]; p < d.row_ptr[r + 1]; ++p) out[d.col[p]] += a * d.val[p];
}

/// Cholesky solve of a dense SPD system (row-major n x n), in place into b.
void cholesky_solve(std::vector<double>& a, std::vector<double>& b, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    double s = a[j * n + j];
    for (int64_t k = 0; k < j; ++k) s -= a[j * n + k] * a[j * n + k];
    GCOMP_EXPECTS(s > 0, gcompErrorInvalidArgument,
                  "the Newton system of the reference solution is not positive definite (l2 regularization 0 with "
                  "linearly dependent features?); use a positive l2 regularization");
    const double l = std::sqrt(s);
    a[j * n + j] = l;
    for (int64_t i = j + 1; i < n; ++i) {
      double t = a[i * n + j];
      for (int64_t k = 0; k < j; ++k) t -= a[i * n + k] * a[j * n + k];
      a[i * n + j] = t / l;
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    double t = b[i];
    for (int64_t k = 0; k < i; ++k) t -= a[i * n + k] * b[k];
    b[i] = t / a[i * n + i];
  }
  for (int64_t i = n - 1; i >= 0; --i) {
    double t = b[i];
    for (int64_t k = i + 1; k < n; ++k) t -= a[k * n + i] * b[k];
    b[i] = t / a[i * n + i];
  }
}

double power_iteration(const std::vector<double>& m, int64_t n) {
  std::vector<double> v(static_cast<size_t>(n), 1.0), w(static_cast<size_t>(n));
  double lambda = 0;
  for (int it = 0; it < 100000; ++it) {
    double norm = 0;
    for (double t : v) norm += t * t;
    norm = std::sqrt(norm);
    if (norm == 0) return 0;
    for (double& t : v) t /= norm;
    for (int64_t i = 0; i < n; ++i) {
      double s = 0;
      for (int64_t j = 0; j < n; ++j) s += m[i * n + j] * v[j];
      w[i] = s;
    }
    double rq = 0;
    for (int64_t i = 0; i < n; ++i) rq += v[i] * w[i];
    if (it > 10 && std::fabs(rq - lambda) <= 1e-13 * std::fabs(rq)) return rq;
    lambda = rq;
    v.swap(w);
  }
  return lambda;
}

/// Lines of a text file read in chunks, each at most kMaxLineBytes long (a file without newlines,
/// such as /dev/zero, is refused at that length instead of filling memory).
class LineReader {
 public:
  explicit LineReader(io::InputFile& f) : f_(f), buf_(size_t{1} << 16) {}
  bool next(std::string& line, int64_t lineno) {
    line.clear();
    for (;;) {
      if (pos_ == end_) {
        if (eof_) return !line.empty();
        pos_ = 0;
        end_ = f_.read(buf_.data(), buf_.size());
        if (end_ == 0) {
          eof_ = true;
          return !line.empty();
        }
      }
      const auto* first = buf_.data() + pos_;
      const auto* nl = static_cast<const uint8_t*>(std::memchr(first, '\n', end_ - pos_));
      const size_t take = nl != nullptr ? static_cast<size_t>(nl - first) : end_ - pos_;
      if (line.size() + take > kMaxLineBytes)
        GCOMP_FAIL(gcompErrorInvalidArgument, printable(f_.path()) + ":" + std::to_string(lineno) +
                                                  ": line longer than " + std::to_string(kMaxLineBytes) + " bytes");
      line.append(reinterpret_cast<const char*>(first), take);
      pos_ += take;
      if (nl != nullptr) {
        ++pos_;
        return true;
      }
    }
  }

 private:
  static constexpr size_t kMaxLineBytes = size_t{64} << 20;
  io::InputFile& f_;
  std::vector<uint8_t> buf_;
  size_t pos_ = 0, end_ = 0;
  bool eof_ = false;
};

}  // namespace

Dataset load_libsvm(const std::string& path, int64_t features, bool bias) {
  GCOMP_EXPECTS(
      features >= 0 && features <= kMaxLibsvmIndex, gcompErrorInvalidArgument,
      "load_libsvm: features must be in 0.." + std::to_string(kMaxLibsvmIndex) + ", got " + std::to_string(features));
  io::InputFile f(path, "data file");
  LineReader lines(f);
  Dataset d;
  std::string line;
  int64_t lineno = 0, max_index = 0;
  std::vector<double> raw_labels;
  auto bad = [&](const std::string& why) {
    GCOMP_FAIL(gcompErrorInvalidArgument, printable(path) + ":" + std::to_string(lineno) + ": " + why);
  };
  while (lines.next(line, lineno + 1)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const char* p = line.data();
    const char* end = p + line.size();
    while (p < end && std::isspace(static_cast<unsigned char>(*p))) ++p;
    if (p == end) continue;
    double label = 0;
    if (*p == '+') ++p;  // "+1" labels: from_chars takes no plus sign
    auto [lp, lec] = std::from_chars(p, end, label);
    if (lec != std::errc() || !std::isfinite(label)) bad("the line does not start with a numeric label");
    p = lp;
    int64_t prev = 0;
    while (true) {
      while (p < end && std::isspace(static_cast<unsigned char>(*p))) ++p;
      if (p == end) break;
      int64_t idx = 0;
      auto [ip, iec] = std::from_chars(p, end, idx);
      if (iec != std::errc() || ip == end || *ip != ':') bad("expected index:value");
      if (idx <= prev) bad("indices must be >= 1 and increasing (got " + std::to_string(idx) + ")");
      if (features > 0 && idx > features)
        bad("index " + std::to_string(idx) + " exceeds --features " + std::to_string(features));
      if (idx > kMaxLibsvmIndex) bad("index " + std::to_string(idx) + " exceeds " + std::to_string(kMaxLibsvmIndex));
      double v = 0;
      auto [vp, vec] = std::from_chars(ip + 1, end, v);
      if (vec != std::errc() || !std::isfinite(v)) bad("bad value for index " + std::to_string(idx));
      p = vp;
      if (p < end && !std::isspace(static_cast<unsigned char>(*p))) bad("unexpected character after a value");
      prev = idx;
      max_index = std::max(max_index, idx);
      if (v != 0.0) {
        d.col.push_back(static_cast<int32_t>(idx - 1));
        d.val.push_back(v);
      }
    }
    raw_labels.push_back(label);
    if (bias) {
      d.col.push_back(-1);  // patched below once the dimension is known
      d.val.push_back(1.0);
    }
    d.row_ptr.push_back(static_cast<int64_t>(d.col.size()));
  }
  if (raw_labels.empty()) GCOMP_FAIL(gcompErrorInvalidArgument, printable(path) + ": no data rows");
  d.rows = static_cast<int64_t>(raw_labels.size());
  const int64_t base = features > 0 ? features : max_index;
  d.cols = base + (bias ? 1 : 0);
  for (auto& c : d.col)
    if (c < 0) c = static_cast<int32_t>(base);
  std::set<double> distinct(raw_labels.begin(), raw_labels.end());
  if (distinct.size() > 2)
    GCOMP_FAIL(gcompErrorInvalidArgument, printable(path) + ": " + std::to_string(distinct.size()) +
                                              " distinct labels; binary classification needs two");
  const double hi = *distinct.rbegin();
  d.label.resize(raw_labels.size());
  for (size_t i = 0; i < raw_labels.size(); ++i)
    d.label[i] = distinct.size() == 2 ? (raw_labels[i] == hi ? 1.0 : -1.0) : 1.0;
  return d;
}

Problem::Problem(const Dataset& data, int workers, Loss loss, double lambda)
    : data_(&data), workers_(workers), loss_(loss), lambda_(lambda) {
  GCOMP_EXPECTS(workers >= 1, gcompErrorInvalidArgument, "need at least one worker");
  GCOMP_EXPECTS(data.rows >= workers, gcompErrorInvalidArgument,
                "more workers (" + std::to_string(workers) + ") than data rows (" + std::to_string(data.rows) + ")");
  begin_.resize(static_cast<size_t>(workers) + 1);
  const int64_t q = data.rows / workers, rem = data.rows % workers;
  begin_[0] = 0;
  for (int i = 0; i < workers; ++i) begin_[i + 1] = begin_[i] + q + (i < rem ? 1 : 0);
}

double Problem::value(std::span<const double> x, int worker) const {
  if (worker < 0) {
    double s = 0;
    for (int i = 0; i < workers_; ++i) s += value(x, i);
    return s / workers_;
  }
  const Dataset& d = *data_;
  double s = 0;
  for (int64_t r = begin_[worker]; r < begin_[worker + 1]; ++r) {
    const double z = dot_row(d, r, x);
    s += loss_ == Loss::kLogistic ? logistic_loss(d.label[r] * z) : 0.5 * (z - d.label[r]) * (z - d.label[r]);
  }
  double xx = 0;
  for (double v : x) xx += v * v;
  return s / static_cast<double>(rows_of(worker)) + 0.5 * lambda_ * xx;
}

void Problem::gradient(std::span<const double> x, int worker, std::span<double> out) const {
  if (worker < 0) {
    std::vector<double> g(out.size());
    std::fill(out.begin(), out.end(), 0.0);
    for (int i = 0; i < workers_; ++i) {
      gradient(x, i, g);
      for (size_t j = 0; j < out.size(); ++j) out[j] += g[j];
    }
    for (double& v : out) v /= workers_;
    return;
  }
  const Dataset& d = *data_;
  std::fill(out.begin(), out.end(), 0.0);
  const double inv = 1.0 / static_cast<double>(rows_of(worker));
  for (int64_t r = begin_[worker]; r < begin_[worker + 1]; ++r) {
    const double z = dot_row(d, r, x);
    const double c = loss_ == Loss::kLogistic ? -d.label[r] * sigmoid(-d.label[r] * z) : z - d.label[r];
    axpy_row(d, r, c * inv, out);
  }
  for (size_t j = 0; j < out.size(); ++j) out[j] += lambda_ * x[j];
}

void Problem::stochastic_gradient(std::span<const double> x, int worker, int64_t batch, uint64_t seed,
                                  std::span<double> out) const {
  const Dataset& d = *data_;
  const int64_t m = rows_of(worker);
  batch = std::min(batch, m);
  std::mt19937_64 rng(seed);
  std::vector<int64_t> rows(static_cast<size_t>(m));
  std::iota(rows.begin(), rows.end(), begin_[worker]);
  for (int64_t j = 0; j < batch; ++j) {
    std::uniform_int_distribution<int64_t> pick(j, m - 1);
    std::swap(rows[j], rows[pick(rng)]);
  }
  std::fill(out.begin(), out.end(), 0.0);
  const double inv = 1.0 / static_cast<double>(batch);
  for (int64_t j = 0; j < batch; ++j) {
    const int64_t r = rows[j];
    const double z = dot_row(d, r, x);
    const double c = loss_ == Loss::kLogistic ? -d.label[r] * sigmoid(-d.label[r] * z) : z - d.label[r];
    axpy_row(d, r, c * inv, out);
  }
  for (size_t j = 0; j < out.size(); ++j) out[j] += lambda_ * x[j];
}

template <class Row>
void Problem::for_each_hessian_row(std::span<const double> x, int worker, Row&& row) const {
  const Dataset& d = *data_;
  const int lo = worker < 0 ? 0 : worker, hi = worker < 0 ? workers_ : worker + 1;
  for (int i = lo; i < hi; ++i) {
    const double inv = 1.0 / static_cast<double>(rows_of(i)) / (hi - lo);
    for (int64_t r = begin_[i]; r < begin_[i + 1]; ++r) {
      double w = 1.0;
      if (loss_ == Loss::kLogistic) {
        const double s = sigmoid(d.label[r] * dot_row(d, r, x));
        w = s * (1 - s);
      }
      row(r, w, inv);
    }
  }
}

void Problem::hessian_product(std::span<const double> x, int worker, std::span<const double> v,
                              std::span<double> out) const {
  const Dataset& d = *data_;
  std::fill(out.begin(), out.end(), 0.0);
  for_each_hessian_row(x, worker,
                       [&](int64_t r, double w, double inv) { axpy_row(d, r, w * dot_row(d, r, v) * inv, out); });
  for (size_t j = 0; j < out.size(); ++j) out[j] += lambda_ * v[j];
}

void Problem::hessian_diagonal(std::span<const double> x, int worker, std::span<double> out) const {
  const Dataset& d = *data_;
  std::fill(out.begin(), out.end(), 0.0);
  for_each_hessian_row(x, worker, [&](int64_t r, double w, double inv) {
    for (int64_t p = d.row_ptr[r]; p < d.row_ptr[r + 1]; ++p) out[d.col[p]] += w * d.val[p] * d.val[p] * inv;
  });
  for (double& v : out) v += lambda_;
}

double Problem::smoothness_without_reg() const {
  const Dataset& d = *data_;
  const int64_t n = d.cols;
  if (n > kDenseMaxDim) return smoothness_matrix_free();
  std::vector<double> m(static_cast<size_t>(n * n));
  double best = 0;
  std::vector<double> total(static_cast<size_t>(n * n), 0.0);
  for (int i = 0; i < workers_; ++i) {
    std::fill(m.begin(), m.end(), 0.0);
    for (int64_t r = begin_[i]; r < begin_[i + 1]; ++r)
      for (int64_t p = d.row_ptr[r]; p < d.row_ptr[r + 1]; ++p)
        for (int64_t q = d.row_ptr[r]; q < d.row_ptr[r + 1]; ++q) m[d.col[p] * n + d.col[q]] += d.val[p] * d.val[q];
    const double inv = 1.0 / static_cast<double>(rows_of(i));
    for (auto& v : m) v *= inv;
    if (loss_ == Loss::kLogistic) {
      best = std::max(best, power_iteration(m, n) / 4.0);
    } else {
      for (size_t j = 0; j < m.size(); ++j) total[j] += m[j] / workers_;
    }
  }
  return loss_ == Loss::kLogistic ? best : power_iteration(total, n);
}

double Problem::smoothness_matrix_free() const {
  const Dataset& d = *data_;
  const int64_t n = d.cols;
  // The largest eigenvalue of M_i = (1/m_i) sum_r a_r a_r^T by power iteration with products from
  // the rows (O(nnz) each), with the stopping rule of the dense power_iteration().
  auto top = [&](const std::function<void(const std::vector<double>&, std::vector<double>&)>& apply) {
    std::vector<double> v(static_cast<size_t>(n), 1.0), w(static_cast<size_t>(n));
    double lambda = 0;
    for (int it = 0; it < 100000; ++it) {
      double norm = 0;
      for (double t : v) norm += t * t;
      norm = std::sqrt(norm);
      if (norm == 0) return 0.0;
      for (double& t : v) t /= norm;
      apply(v, w);
      double rq = 0;
      for (int64_t i = 0; i < n; ++i) rq += v[i] * w[i];
      if (it > 10 && std::fabs(rq - lambda) <= 1e-13 * std::fabs(rq)) return rq;
      lambda = rq;
      v.swap(w);
    }
    return lambda;
  };
  auto worker_product = [&](int i, const std::vector<double>& v, std::vector<double>& w, double scale) {
    const double inv = scale / static_cast<double>(rows_of(i));
    for (int64_t r = begin_[i]; r < begin_[i + 1]; ++r) axpy_row(d, r, inv * dot_row(d, r, v), w);
  };
  if (loss_ == Loss::kLogistic) {
    double best = 0;
    for (int i = 0; i < workers_; ++i) {
      best = std::max(best, top([&](const std::vector<double>& v, std::vector<double>& w) {
                              std::fill(w.begin(), w.end(), 0.0);
                              worker_product(i, v, w, 1.0);
                            }) / 4.0);
    }
    return best;
  }
  return top([&](const std::vector<double>& v, std::vector<double>& w) {
    std::fill(w.begin(), w.end(), 0.0);
    for (int i = 0; i < workers_; ++i) worker_product(i, v, w, 1.0 / workers_);
  });
}

std::vector<double> Problem::solve_matrix_free(double tol, int max_iters) const {
  const int64_t n = data_->cols;
  const auto un = static_cast<size_t>(n);
  // Newton's method with the Newton system solved by conjugate gradients on Hessian-vector
  // products (O(nnz) each): the forcing term min(0.5, sqrt|g|) |g| makes the steps superlinear.
  std::vector<double> x(un, 0.0), g(un), p(un), r(un), dir(un), hd(un);
  auto norm = [](const std::vector<double>& v) {
    double s = 0;
    for (double t : v) s += t * t;
    return std::sqrt(s);
  };
  for (int it = 0; it < max_iters; ++it) {
    gradient(x, -1, g);
    const double gn = norm(g);
    if (gn < tol) return x;
    const double target = std::min(0.5, std::sqrt(gn)) * gn;
    std::fill(p.begin(), p.end(), 0.0);
    r = g;
    dir = g;
    double rr = gn * gn;
    for (int64_t k = 0; k < std::max<int64_t>(n, 100) && std::sqrt(rr) > target; ++k) {
      hessian_product(x, -1, dir, hd);
      double dhd = 0;
      for (size_t j = 0; j < un; ++j) dhd += dir[j] * hd[j];
      if (!(dhd > 0)) break;
      const double a = rr / dhd;
      double rr_next = 0;
      for (size_t j = 0; j < un; ++j) {
        p[j] += a * dir[j];
        r[j] -= a * hd[j];
        rr_next += r[j] * r[j];
      }
      const double b = rr_next / rr;
      for (size_t j = 0; j < un; ++j) dir[j] = r[j] + b * dir[j];
      rr = rr_next;
    }
    for (size_t j = 0; j < un; ++j) x[j] -= p[j];
  }
  gradient(x, -1, g);
  GCOMP_EXPECTS(norm(g) < tol * 1e3, gcompErrorInvalidArgument,
                "the reference solution did not converge (Newton-CG, |grad f| = " + std::to_string(norm(g)) +
                    "); a larger l2 regularization makes the problem better conditioned");
  return x;
}

std::vector<double> Problem::solve(double tol, int max_iters) const {
  const Dataset& d = *data_;
  const int64_t n = d.cols;
  if (n > kDenseMaxDim) return solve_matrix_free(tol, std::max(max_iters, 200));
  std::vector<double> x(static_cast<size_t>(n), 0.0), g(static_cast<size_t>(n)), h(static_cast<size_t>(n * n));
  for (int it = 0; it < max_iters; ++it) {
    gradient(x, -1, g);
    double gn = 0;
    for (double v : g) gn += v * v;
    if (std::sqrt(gn) < tol) return x;
    std::fill(h.begin(), h.end(), 0.0);
    for (int i = 0; i < workers_; ++i) {
      const double inv = 1.0 / static_cast<double>(rows_of(i)) / workers_;
      for (int64_t r = begin_[i]; r < begin_[i + 1]; ++r) {
        double w = 1.0;
        if (loss_ == Loss::kLogistic) {
          const double s = sigmoid(d.label[r] * dot_row(d, r, x));
          w = s * (1 - s);
        }
        for (int64_t p = d.row_ptr[r]; p < d.row_ptr[r + 1]; ++p)
          for (int64_t q = d.row_ptr[r]; q < d.row_ptr[r + 1]; ++q)
            h[d.col[p] * n + d.col[q]] += w * inv * d.val[p] * d.val[q];
      }
    }
    for (int64_t j = 0; j < n; ++j) h[j * n + j] += lambda_;
    cholesky_solve(h, g, n);
    for (int64_t j = 0; j < n; ++j) x[j] -= g[j];
  }
  gradient(x, -1, g);
  double gn = 0;
  for (double v : g) gn += v * v;
  GCOMP_EXPECTS(std::sqrt(gn) < tol * 1e3, gcompErrorInvalidArgument,
                "the reference solution did not converge (Newton, |grad f| = " + std::to_string(std::sqrt(gn)) +
                    "); a larger l2 regularization makes the problem better conditioned");
  return x;
}

}  // namespace gcomp
