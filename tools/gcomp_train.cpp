// SPDX-License-Identifier: Apache-2.0
// gcomp-train: distributed l2-regularised logistic regression / least squares on LIBSVM data with
// any algorithm and codec; reports the distance to the exact optimum and the bits sent.
#include <gcomp/comm.hpp>
#if defined(GCOMP_HAVE_CUDA)
#include <gcomp/cuda.hpp>
#endif
#include <gcomp/checkpoint.hpp>
#include <gcomp/io.hpp>
#include <gcomp/names.hpp>
#include <gcomp/session.hpp>

#include "tools/support/problems.hpp"

#include <algorithm>
#include <cerrno>
#include <cfloat>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include <unistd.h>

namespace {

using namespace gcomp;

/// The usage text; the names of --device, --algo, --server and --compensation come from the name
/// tables of <gcomp/names.hpp> (tests/tools/test_gcomp_train.sh checks them against the header).
std::string usage() {
  return R"(usage: gcomp-train --data PATH [options]
problem:   --data PATH (LIBSVM)  --features N  --no-bias  --loss logistic|squared
           --l2 LAMBDA|auto (auto: L0/100)  --l1 LAMBDA1 (prox, diana only)
workers:   --workers N (contiguous split)  --backend local|mpi|nccl  --device )" +
         enum_choices<Backend>("|") + R"( (session backend: double
           state, fp32 state on the CPU, fp32 state on the GPU). nccl: one process per GPU, launched by mpirun or with
           RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT (or GCOMP_NCCL_ID_FILE); implies --device cuda
algorithm: --algo )" +
         enum_choices<Algorithm>("|") + R"(
           --codec SPEC  --server-codec SPEC  --server )" +
         enum_choices<ServerMode>("|") + R"(
           --lr GAMMA|auto  --alpha A|auto  --momentum BETA (signsgd-mv: Signum)  --batch B  --seed S
           --compensation )" +
         enum_choices<Compensation>("|") + R"( (hessian-ec)
delays:    --delay TAU (every gradient TAU steps late) | --delay-random TAU (per step and worker, uniform in
           0..TAU) | --delay-table FILE (a row of one delay per worker per step, rows repeat)
run:       --iters T  --compare "ALGO[=CODEC[|SERVER_CODEC]];..."
output:    --json PATH  --csv PATH  --quiet  --log-every K
state:     --checkpoint PATH --checkpoint-every K  --resume PATH
)";
}

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Options {
  std::string data, loss = "logistic", l2 = "auto", lr = "auto", alpha = "auto", backend = "local", device = "cpu";
  std::string algo = "diana", codec = "dither:levels=1,norm=linf", server_codec = "sign", server = "replicated";
  std::string compensation = "hessian", compare, json, csv, checkpoint, resume, delay_table;
  int64_t features = 0, iters = 1000, batch = 0, checkpoint_every = 0, log_every = 0;
  int workers = 10, delay = 0;
  DelayMode delay_mode = DelayMode::kFixed;
  bool delay_given = false;  // --delay, --delay-random or --delay-table: the bounded-delay setting
  double l1 = 0, momentum = 0;
  uint64_t seed = 1;
  bool bias = true, quiet = false, device_given = false;
  std::set<std::string> given;  // every flag on the command line
};

/// Most thread ranks of the local backend (--workers): each is an OS thread, and every rank decodes
/// the messages of all the others, so a step costs P^2 decodes.
constexpr int64_t kMaxLocalWorkers = 256;

double to_double(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  errno = 0;
  const double d = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || !std::isfinite(d) || errno == ERANGE)
    throw UsageError(flag + ": '" + v + "' is not a finite number");
  return d;
}

/// A number in [lo, hi] (hi_open: [lo, hi)).
double to_double_in(const std::string& flag, const std::string& v, double lo, double hi, bool hi_open = false) {
  const double d = to_double(flag, v);
  if (d < lo || d > hi || (hi_open && d == hi)) {
    char range[96];
    if (hi == DBL_MAX)
      std::snprintf(range, sizeof range, "must be >= %g", lo);
    else
      std::snprintf(range, sizeof range, "is outside [%g, %g%s", lo, hi, hi_open ? ")" : "]");
    throw UsageError(flag + ": " + v + " " + range);
  }
  return d;
}

int64_t to_int(const std::string& flag, const std::string& v, int64_t lo = INT64_MIN, int64_t hi = INT64_MAX) {
  int64_t d = 0;
  const auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), d);
  if (v.empty() || ec == std::errc::invalid_argument || ptr != v.data() + v.size())
    throw UsageError(flag + ": '" + v + "' is not an integer");
  if (ec == std::errc::result_out_of_range || d < lo || d > hi)
    throw UsageError(flag + ": " + v +
                     (hi == INT64_MAX ? " must be >= " + std::to_string(lo)
                                      : " is outside " + std::to_string(lo) + ".." + std::to_string(hi)));
  return d;
}

uint64_t to_u64(const std::string& flag, const std::string& v) {
  uint64_t d = 0;
  const auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), d);
  if (v.empty() || ec != std::errc() || ptr != v.data() + v.size())
    throw UsageError(flag + ": '" + v + "' is not an integer in 0..2^64-1");
  return d;
}

Options parse(int argc, char** argv) {
  Options o;
  std::map<std::string, std::string*> str = {{"--data", &o.data},       {"--loss", &o.loss},
                                             {"--l2", &o.l2},           {"--lr", &o.lr},
                                             {"--alpha", &o.alpha},     {"--backend", &o.backend},
                                             {"--device", &o.device},   {"--algo", &o.algo},
                                             {"--codec", &o.codec},     {"--server-codec", &o.server_codec},
                                             {"--server", &o.server},   {"--compensation", &o.compensation},
                                             {"--compare", &o.compare}, {"--json", &o.json},
                                             {"--csv", &o.csv},         {"--checkpoint", &o.checkpoint},
                                             {"--resume", &o.resume},   {"--delay-table", &o.delay_table}};
  int delay_flags = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quiet") {
      o.quiet = true;
      continue;
    }
    if (a == "--bias") {
      o.bias = true;
      continue;
    }
    if (a == "--no-bias") {
      o.bias = false;
      continue;
    }
    if (a == "-h" || a == "--help") {
      std::fputs(usage().c_str(), stdout);
      std::exit(0);
    }
    if (i + 1 >= argc)
      throw UsageError(a.rfind("--", 0) == 0 ? a + " needs a value" : "unexpected argument '" + a + "'");
    const std::string v = argv[++i];
    if (a == "--device") o.device_given = true;
    o.given.insert(a);
    if (a == "--delay" || a == "--delay-random" || a == "--delay-table") {
      ++delay_flags;
      o.delay_given = true;
    }
    if (auto it = str.find(a); it != str.end())
      *it->second = v;
    else if (a == "--features")
      o.features = to_int(a, v, 1, kMaxLibsvmIndex);
    else if (a == "--iters")
      o.iters = to_int(a, v, 0, int64_t{1} << 53);
    else if (a == "--batch")
      o.batch = to_int(a, v, 1);
    else if (a == "--checkpoint-every")
      o.checkpoint_every = to_int(a, v, 1);
    else if (a == "--log-every")
      o.log_every = to_int(a, v, 1);
    else if (a == "--workers")
      o.workers = static_cast<int>(to_int(a, v, 1, INT32_MAX));
    else if (a == "--delay")
      o.delay = static_cast<int>(to_int(a, v, 0, INT32_MAX - 1));
    else if (a == "--delay-random") {
      o.delay = static_cast<int>(to_int(a, v, 0, INT32_MAX - 1));
      o.delay_mode = DelayMode::kRandom;
    } else if (a == "--l1")
      o.l1 = to_double_in(a, v, 0, DBL_MAX);
    else if (a == "--momentum")
      o.momentum = to_double_in(a, v, 0, 1, true);
    else if (a == "--seed")
      o.seed = to_u64(a, v);
    else
      throw UsageError("unknown option " + a);
  }
  if (o.data.empty()) throw UsageError("--data is required");
  if (delay_flags > 1) throw UsageError("give one of --delay, --delay-random and --delay-table");
  if (!o.delay_table.empty()) o.delay_mode = DelayMode::kTable;
  if (o.backend == "local" && o.workers > kMaxLocalWorkers)
    throw UsageError("--workers " + std::to_string(o.workers) + " is more than the local backend's " +
                     std::to_string(kMaxLocalWorkers) +
                     " thread ranks (each decodes all P messages per step: P^2 work); "
                     "use --backend mpi for more ranks");
  // Values of the string-valued numeric flags, checked here so that a bad one fails before any work.
  if (o.l2 != "auto") to_double_in("--l2", o.l2, 0, DBL_MAX);
  if (o.lr != "auto" && !(to_double("--lr", o.lr) > 0)) throw UsageError("--lr: " + o.lr + " is not > 0");
  if (o.alpha != "auto") {
    const double alpha = to_double("--alpha", o.alpha);
    if (!(alpha > 0 && alpha <= 1)) throw UsageError("--alpha: " + o.alpha + " is outside (0, 1]");
  }
  if (o.loss != "logistic" && o.loss != "squared") throw UsageError("--loss must be logistic or squared");
  if (o.backend != "local" && o.backend != "mpi" && o.backend != "nccl")
    throw UsageError("--backend must be local, mpi or nccl");
  if (!known_name<Backend>(o.device)) throw UsageError("--device must be one of " + enum_choices<Backend>());
  if (o.backend == "nccl") {
    if (o.device_given && o.device != "cuda")
      throw UsageError("--backend nccl runs the cuda session backend (device buffers); drop --device " + o.device +
                       " or use --device cuda");
    o.device = "cuda";
  }
  if (!known_name<ServerMode>(o.server)) throw UsageError("--server must be one of " + enum_choices<ServerMode>());
  if (!known_name<Compensation>(o.compensation))
    throw UsageError("--compensation must be one of " + enum_choices<Compensation>());
  if (!o.checkpoint.empty() && o.checkpoint_every <= 0) throw UsageError("--checkpoint needs --checkpoint-every K > 0");
  if (o.checkpoint.empty() && o.given.count("--checkpoint-every"))
    throw UsageError("--checkpoint-every needs --checkpoint PATH");
  return o;
}

/// One configuration of a run (the main one, or an entry of --compare).
struct RunSpec {
  Algorithm algo;
  std::string codec;
  std::string server_codec;  // empty: --server-codec
};

struct HistoryPoint {
  int64_t iter;
  double rel_error, f_gap;
  uint64_t bytes_up, bytes_down;
};

struct RunResult {
  RunSpec spec;
  SessionConfig cfg;
  std::vector<HistoryPoint> history;
  uint64_t bytes_up = 0, bytes_down = 0;
  double seconds = 0, bits_per_element = 0;
  int64_t iters = 0;
};

struct Context {
  Options opt;
  Dataset data;
  std::unique_ptr<Problem> problem;
  std::vector<double> xstar;
  uint64_t data_digest = 0;  // of the data and the problem: checked when a checkpoint set is loaded
  double fstar = 0, xstar_sq = 0, L = 0, L0 = 0, lambda = 0, grad0_inf = 0;
  int delay_bound = 0;               // tau: --delay, --delay-random, or the largest table entry
  std::vector<int32_t> delay_table;  // --delay-table, rows of one delay per worker
  /// f(x) + every regularizer of the run (l2 is inside the problem, l1 through the prox).
  [[nodiscard]] double objective(const std::vector<double>& x) const {
    double l1 = 0;
    if (opt.l1 > 0)
      for (double v : x) l1 += std::fabs(v);
    return problem->value(x) + opt.l1 * l1;
  }
};

/// --delay-table FILE: whitespace-separated delays, one line per step with one entry per worker
/// (blank lines and lines starting with '#' skipped); the rows repeat. Returns the rows flattened.
std::vector<int32_t> read_delay_table(const std::string& path, int workers, int* bound) {
  std::ifstream in(path);
  if (!in) throw UsageError("--delay-table: cannot read '" + path + "'");
  std::vector<int32_t> out;
  std::string line;
  int lineno = 0;
  *bound = 0;
  while (std::getline(in, line)) {
    ++lineno;
    const size_t first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos || line[first] == '#') continue;
    std::istringstream row(line);
    std::string tok;
    int count = 0;
    while (row >> tok) {
      char* end = nullptr;
      const long v = std::strtol(tok.c_str(), &end, 10);
      if (*end != '\0' || v < 0 || v > (1 << 20))
        throw UsageError("--delay-table " + path + ":" + std::to_string(lineno) + ": '" + tok +
                         "' is not a delay (an integer in [0, 2^20])");
      if (out.size() >= (size_t{1} << 24)) throw UsageError("--delay-table " + path + ": more than 2^24 delays");
      out.push_back(static_cast<int32_t>(v));
      *bound = std::max(*bound, static_cast<int>(v));
      ++count;
    }
    if (count != workers)
      throw UsageError("--delay-table " + path + ":" + std::to_string(lineno) + ": " + std::to_string(count) +
                       " delays, expected one per worker (" + std::to_string(workers) + ")");
  }
  if (out.empty()) throw UsageError("--delay-table " + path + ": no rows");
  return out;
}

double omega_or_zero(const std::string& codec, int64_t d) {
  const Guarantee g = make_codec(codec, Layout(d))->guarantee();
  return g.kind == Guarantee::Kind::kUnbiased ? g.omega : 0.0;
}

SessionConfig make_config(const Context& c, const RunSpec& r) {
  const Options& o = c.opt;
  SessionConfig cfg;
  cfg.algorithm = r.algo;
  cfg.codec = r.algo == Algorithm::kGd ? "identity" : r.codec;
  cfg.server_codec = r.server_codec.empty() ? o.server_codec : r.server_codec;
  cfg.server = parse_enum<ServerMode>(o.server);
  cfg.momentum = o.momentum;
  cfg.delay = c.delay_bound;
  cfg.delay_mode = o.delay_mode;
  cfg.delay_table = c.delay_table;
  cfg.seed = o.seed;
  cfg.backend = parse_backend(o.device);
  if (o.l1 > 0) {
    cfg.prox = Regularizer::kL1;
    cfg.prox_lambda = o.l1;
  }
  cfg.compensation = parse_enum<Compensation>(o.compensation);
  if (o.alpha != "auto") cfg.alpha = to_double("--alpha", o.alpha);
  const int64_t d = c.problem->dim();
  const double n = c.problem->workers();
  const double omega = omega_or_zero(cfg.codec, d);
  if (o.lr != "auto") {
    cfg.lr = to_double("--lr", o.lr);
  } else {
    // The spec's safe steps (spec/ALGORITHMS.md §7.2, §8, §9.2; docs/algorithms.md "Automatic step").
    switch (r.algo) {
      case Algorithm::kDiana:
      case Algorithm::kCompressedGd: cfg.lr = 1.0 / (c.L * (1.0 + 6.0 * omega / n)); break;
      case Algorithm::kGd:
      case Algorithm::kEfSgd:
      case Algorithm::kHessianEc: cfg.lr = 1.0 / c.L; break;
      case Algorithm::kDistEfSgdm: cfg.lr = 0.05 / c.L; break;
      case Algorithm::kDoubleSqueeze: cfg.lr = 0.5 / c.L; break;
      case Algorithm::kSignSgdMv: {
        double m = 0;
        for (double v : c.xstar) m = std::max(m, std::fabs(v));
        cfg.lr = 1e-2 * m;
        break;
      }
    }
    // The bounded-delay setting (any delay flag, tau = 0 included: spec §7.2 and T15, where
    // tau = 0 is the synchronous run with this step): gamma = 1/(L (1 + omega) (tau + 1)).
    if (o.delay_given) cfg.lr = 1.0 / (c.L * (1.0 + omega) * (c.delay_bound + 1));
    // Heavy-ball momentum sums the steps (effective step lr / (1 - mu)); dist-ef-sgdm's T12 step
    // already holds its momentum, and Signum's momentum is an average (its sign is sent).
    if (o.momentum > 0 && r.algo != Algorithm::kDistEfSgdm && r.algo != Algorithm::kSignSgdMv)
      cfg.lr *= 1.0 - o.momentum;
  }
  return cfg;
}

/// The history as text for a checkpoint set's manifest: one point per line, doubles with 17 digits.
std::string history_text(const std::vector<HistoryPoint>& h) {
  std::string out;
  char line[160];
  for (const HistoryPoint& p : h) {
    std::snprintf(line, sizeof line, "%lld %.17g %.17g %llu %llu\n", static_cast<long long>(p.iter), p.rel_error,
                  p.f_gap, static_cast<unsigned long long>(p.bytes_up), static_cast<unsigned long long>(p.bytes_down));
    out += line;
  }
  return out;
}

std::vector<HistoryPoint> parse_history(const std::string& text, const std::string& path) {
  std::vector<HistoryPoint> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    HistoryPoint p{};
    long long iter = 0;
    unsigned long long up = 0, down = 0;
    if (std::sscanf(line.c_str(), "%lld %lf %lf %llu %llu", &iter, &p.rel_error, &p.f_gap, &up, &down) != 5)
      GCOMP_FAIL(gcompErrorCorruptPayload,
                 "checkpoint set '" + printable(path) + "': the history in its manifest is damaged");
    p.iter = iter;
    p.bytes_up = up;
    p.bytes_down = down;
    out.push_back(p);
  }
  return out;
}

/// Runs one configuration on this rank's communicator; rank 0 fills `result`.
void run_rank(const Context& c, Communicator& comm, const RunSpec& r, RunResult& result, bool progress) {
  const Options& o = c.opt;
  const int64_t d = c.problem->dim();
  SessionConfig cfg = make_config(c, r);
  const int rank = comm.rank();
  std::vector<double> x(static_cast<size_t>(d), 0.0), g(static_cast<size_t>(d));
  if (r.algo == Algorithm::kHessianEc) {
    cfg.hessian_product = [&](std::span<const double> v, std::span<double> out) {
      c.problem->hessian_product(x, -1, v, out);
    };
    cfg.hessian_diagonal = [&](std::span<double> out) { c.problem->hessian_diagonal(x, -1, out); };
  }
  Session session(comm, Layout(d), cfg);
  // Saved with the session state: the iterate, the iteration, and this rank's counters (bytes up,
  // bytes down, seconds), so a resumed run continues them instead of starting at 0; rank 0's
  // history travels in the set's manifest.
  std::vector<double> iter_box(1, 0.0), counters(3, 0.0);
  const Session::Extras extras{{"x", &x}, {"iter", &iter_box}, {"counters", &counters}};
  if (!o.resume.empty()) {
    const CheckpointSetInfo info = load_checkpoint_set(comm, session, o.resume, extras, c.data_digest);
    if (rank == 0) result.history = parse_history(info.app, o.resume);
  }
  const int64_t start = static_cast<int64_t>(iter_box[0]);
  const int64_t every = o.log_every > 0 ? o.log_every : std::max<int64_t>(1, o.iters / 500);
  auto record = [&](int64_t k, uint64_t up, uint64_t down) {
    double e = 0;
    for (int64_t j = 0; j < d; ++j) e += (x[j] - c.xstar[j]) * (x[j] - c.xstar[j]);
    result.history.push_back({k, e / c.xstar_sq, c.objective(x) - c.fstar, up, down});
  };
  uint64_t up = static_cast<uint64_t>(counters[0]), down = static_cast<uint64_t>(counters[1]);
  const double seconds_before = counters[2];
  const auto t0 = std::chrono::steady_clock::now();
  if (rank == 0 && result.history.empty()) record(start, up, down);
  for (int64_t k = start; k < o.iters; ++k) {
    if (o.batch > 0)
      c.problem->stochastic_gradient(x, rank, o.batch, o.seed * 1000003ull + static_cast<uint64_t>(k) * 4099ull + rank,
                                     g);
    else
      c.problem->gradient(x, rank, g);
    const StepStats s = session.apply(g, x);
    up += s.bytes_up;
    down += s.bytes_down;
    if (rank == 0) {
      result.bits_per_element = s.bits_per_element_up;
      if ((k + 1) % every == 0 || k + 1 == o.iters) record(k + 1, up, down);
      if (progress && ((k + 1) % std::max<int64_t>(1, o.iters / 50) == 0 || k + 1 == o.iters)) {
        std::fprintf(stderr, "\r  %-14s iter %8lld/%lld  rel_error %.3e", algorithm_name(r.algo),
                     static_cast<long long>(k + 1), static_cast<long long>(o.iters), result.history.back().rel_error);
        if (k + 1 == o.iters) std::fputc('\n', stderr);
      }
    }
    if (o.checkpoint_every > 0 && (k + 1) % o.checkpoint_every == 0) {
      iter_box[0] = static_cast<double>(k + 1);
      counters = {static_cast<double>(up), static_cast<double>(down),
                  seconds_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()};
      save_checkpoint_set(comm, session, o.checkpoint, extras, c.data_digest,
                          rank == 0 ? history_text(result.history) : "");
    }
  }
  if (rank == 0) {
    result.seconds = seconds_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    result.bytes_up = up;
    result.bytes_down = down;
    result.iters = o.iters;
    result.cfg = cfg;
    result.spec = r;
  }
}

std::vector<RunSpec> runs_of(const Options& o) {
  std::vector<RunSpec> out;
  if (o.compare.empty()) {
    out.push_back({parse_algorithm(o.algo), o.codec, ""});
    return out;
  }
  size_t pos = 0;
  while (pos <= o.compare.size()) {
    size_t semi = o.compare.find(';', pos);
    if (semi == std::string::npos) semi = o.compare.size();
    const std::string item = o.compare.substr(pos, semi - pos);
    pos = semi + 1;
    if (item.empty()) continue;
    // ALGO[=CODEC[|SERVER_CODEC]]
    const size_t eq = item.find('=');
    const std::string algo = item.substr(0, eq);
    std::string codec = eq == std::string::npos ? o.codec : item.substr(eq + 1), server;
    if (const size_t bar = codec.find('|'); bar != std::string::npos) {
      server = codec.substr(bar + 1);
      codec = codec.substr(0, bar);
    }
    const Algorithm a = parse_algorithm(algo);
    if (a == Algorithm::kGd && eq != std::string::npos)
      throw UsageError("--compare: gd sends uncompressed gradients; '" + item + "' gives it a codec");
    out.push_back({a, codec, server});
  }
  if (out.empty()) throw UsageError("--compare lists no configuration");
  return out;
}

bool two_way_algo(Algorithm a) { return a == Algorithm::kDistEfSgdm || a == Algorithm::kDoubleSqueeze; }

/// A flag that no configuration of the run would use is a usage error, not silently ignored.
void check_flags_apply(const Options& o, const std::vector<RunSpec>& runs) {
  bool two_way = false, diana = false, hessian_ec = false;
  for (const RunSpec& r : runs) {
    two_way |= two_way_algo(r.algo);
    diana |= r.algo == Algorithm::kDiana;
    hessian_ec |= r.algo == Algorithm::kHessianEc;
    if (!r.server_codec.empty() && !two_way_algo(r.algo))
      throw UsageError(std::string("--compare: ") + algorithm_name(r.algo) +
                       " has no server (downlink) codec; only dist-ef-sgdm and doublesqueeze do");
  }
  if (o.compare.empty() && runs[0].algo == Algorithm::kGd && o.given.count("--codec"))
    throw UsageError("--codec has no effect with --algo gd (it sends uncompressed gradients); use compressed-gd");
  for (const char* f : {"--server-codec", "--server"})
    if (o.given.count(f) && !two_way)
      throw UsageError(std::string(f) + " has no effect: only dist-ef-sgdm and doublesqueeze have a server step");
  if (o.given.count("--alpha") && !diana) throw UsageError("--alpha has no effect: it is diana's shift step");
  if (runs.size() > 1 && (!o.checkpoint.empty() || !o.resume.empty()))
    throw UsageError("--checkpoint and --resume take one configuration, not a --compare of " +
                     std::to_string(runs.size()));
  if (o.given.count("--compensation") && !hessian_ec)
    throw UsageError("--compensation has no effect: it selects hessian-ec's error compensation");
}

std::string json_escape(const std::string& s) {
  std::string out;
  for (char ch : s) {
    if (ch == '"' || ch == '\\') out += '\\';
    out += ch;
  }
  return out;
}

void write_outputs(const Context& c, const std::vector<RunResult>& results) {
  const Options& o = c.opt;
  std::string json_text, csv_text;
  if (!o.json.empty()) {
    std::ostringstream f;
    auto run_json = [&](const RunResult& r) {
      const HistoryPoint& last = r.history.back();
      f << "{\"algo\": \"" << algorithm_name(r.spec.algo) << "\", \"codec\": \"" << json_escape(r.cfg.codec)
        << "\", \"server_codec\": \"" << json_escape(r.cfg.server_codec) << "\", \"lr\": " << r.cfg.lr
        << ", \"iters\": " << r.iters << ", \"seconds\": " << r.seconds
        << ", \"final\": {\"rel_error\": " << last.rel_error << ", \"f_gap\": " << last.f_gap << "}"
        << ", \"bytes_up\": " << r.bytes_up << ", \"bytes_down\": " << r.bytes_down
        << ", \"bits_per_element_up\": " << r.bits_per_element << ", \"history\": [";
      for (size_t i = 0; i < r.history.size(); ++i) {
        const auto& h = r.history[i];
        f << (i ? ", " : "") << "{\"iter\": " << h.iter << ", \"rel_error\": " << h.rel_error
          << ", \"f_gap\": " << h.f_gap << ", \"bytes_up\": " << h.bytes_up << ", \"bytes_down\": " << h.bytes_down
          << "}";
      }
      f << "]}";
    };
    f.precision(17);
    f << "{\"data\": \"" << json_escape(o.data) << "\", \"workers\": " << c.problem->workers()
      << ", \"dim\": " << c.problem->dim() << ", \"lambda\": " << c.lambda << ", \"L\": " << c.L
      << ", \"f_star\": " << c.fstar << ", \"grad0_inf\": " << c.grad0_inf << ", \"xstar_sq\": " << c.xstar_sq;
    if (results.size() == 1) {
      f << ", ";
      // The single-run JSON carries the run's fields at top level.
      f << "\"run\": ";
      run_json(results[0]);
      const RunResult& r = results[0];
      f << ", \"iters\": " << r.iters << ", \"final\": {\"rel_error\": " << r.history.back().rel_error
        << ", \"f_gap\": " << r.history.back().f_gap << "}, \"bytes_up\": " << r.bytes_up
        << ", \"bytes_down\": " << r.bytes_down << ", \"history\": [";
      for (size_t i = 0; i < r.history.size(); ++i) {
        const auto& h = r.history[i];
        f << (i ? ", " : "") << "{\"iter\": " << h.iter << ", \"rel_error\": " << h.rel_error
          << ", \"f_gap\": " << h.f_gap << ", \"bytes_up\": " << h.bytes_up << "}";
      }
      f << "]";
    } else {
      f << ", \"runs\": [";
      for (size_t i = 0; i < results.size(); ++i) {
        if (i) f << ", ";
        run_json(results[i]);
      }
      f << "]";
    }
    f << "}\n";
    json_text = f.str();
  }
  if (!o.csv.empty()) {
    std::ostringstream f;
    f.precision(17);
    f << "algo,codec,iter,rel_error,f_gap,bytes_up,bytes_down\n";
    for (const auto& r : results)
      for (const auto& h : r.history)
        f << algorithm_name(r.spec.algo) << ",\"" << r.cfg.codec << "\"," << h.iter << "," << h.rel_error << ","
          << h.f_gap << "," << h.bytes_up << "," << h.bytes_down << "\n";
    csv_text = f.str();
  }
  // Each output on its own: one that fails does not keep the other from being written.
  std::string failed;
  for (const auto& [flag, path, text] :
       {std::tuple<const char*, const std::string&, const std::string&>{"--json", o.json, json_text},
        {"--csv", o.csv, csv_text}}) {
    if (path.empty()) continue;
    try {
      io::write_file(path, text, io::OutputOptions{flag, {o.data}});
    } catch (const Error& e) {
      failed += (failed.empty() ? "" : "; ") + std::string(e.what());
    }
  }
  if (!failed.empty()) GCOMP_FAIL(gcompErrorIo, failed);
}

std::string first_hit(const RunResult& r, double eps, bool bits) {
  for (const auto& h : r.history)
    if (h.rel_error <= eps) {
      char buf[64];
      if (bits)
        std::snprintf(buf, sizeof buf, "%.3g", 8.0 * static_cast<double>(h.bytes_up));
      else
        std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(h.iter));
      return buf;
    }
  return "-";
}

void print_table(const Context& c, const std::vector<RunResult>& results) {
  std::printf("\n%s: n = %d workers, d = %lld, lambda = %.4g, L = %.4g, f* = %.10f\n", c.opt.data.c_str(),
              c.problem->workers(), static_cast<long long>(c.problem->dim()), c.lambda, c.L, c.fstar);
  std::printf("%-14s %-32s %10s %9s %10s %10s %10s %10s %11s %10s\n", "algo", "codec", "lr", "bits/elem", "it@1e-6",
              "bits@1e-6", "it@1e-10", "bits@1e-10", "rel_error", "f-f*");
  for (const auto& r : results) {
    const HistoryPoint& last = r.history.back();
    std::printf("%-14s %-32s %10.4g %9.3f %10s %10s %10s %10s %11.3e %10.3e\n", algorithm_name(r.spec.algo),
                r.cfg.codec.c_str(), r.cfg.lr, r.bits_per_element, first_hit(r, 1e-6, false).c_str(),
                first_hit(r, 1e-6, true).c_str(), first_hit(r, 1e-10, false).c_str(), first_hit(r, 1e-10, true).c_str(),
                last.rel_error, last.f_gap);
  }
  std::printf("(bits = uplink bits sent by one worker until the first iteration at or below the target)\n");
}

/// --backend nccl: this process's rank (bootstrap from the launcher: GCOMP_NCCL_ID_FILE, else
/// MASTER_ADDR/MASTER_PORT with RANK/WORLD_SIZE, else MPI under mpirun). Checks the build and the
/// device first, so that a machine without a GPU fails at once with the reason instead of waiting
/// for its peers in the id exchange.
std::unique_ptr<Communicator> make_nccl_world() {
  GCOMP_EXPECTS(nccl_available(), gcompErrorNotSupported,
                "--backend nccl: this gcomp build has no nccl backend (configure with -DGCOMP_CUDA=ON and NCCL "
                "installed with the CUDA toolkit); use --backend local or mpi");
#if defined(GCOMP_HAVE_CUDA)
  std::string why;
  GCOMP_EXPECTS(
      cuda::device_available(&why), gcompErrorNotSupported,
      "--backend nccl needs one CUDA device per process and none is usable (" + why + "); use --backend local or mpi");
#endif
  return make_nccl_communicator();
}

/// FNV-1a 64 of the training data and of what else the trajectory depends on besides the session
/// configuration (loss, l2, l1, batch, split): a checkpoint set records it, and resuming with other
/// data of the same dimension is refused.
uint64_t data_digest(const Context& c, int workers) {
  uint64_t h = 0xcbf29ce484222325ULL;
  auto mix = [&h](const void* data, size_t bytes) {
    const auto* p = static_cast<const uint8_t*>(data);
    for (size_t i = 0; i < bytes; ++i) {
      h ^= p[i];
      h *= 0x100000001b3ULL;
    }
  };
  const Dataset& d = c.data;
  mix(&d.rows, sizeof d.rows);
  mix(&d.cols, sizeof d.cols);
  mix(d.row_ptr.data(), d.row_ptr.size() * sizeof(int64_t));
  mix(d.col.data(), d.col.size() * sizeof(int32_t));
  mix(d.val.data(), d.val.size() * sizeof(double));
  mix(d.label.data(), d.label.size() * sizeof(double));
  char text[200];
  std::snprintf(text, sizeof text, "loss=%s;l2=%.17g;l1=%.17g;batch=%lld;workers=%d", c.opt.loss.c_str(), c.lambda,
                c.opt.l1, static_cast<long long>(c.opt.batch), workers);
  mix(text, std::strlen(text));
  return h;
}

/// The run's output files, checked before any work (io::check_output: directory writable, not a
/// directory, FIFO with a reader..., and none of them the data file).
void check_outputs(const Options& o) {
  for (const auto& [flag, path] : {std::pair<const char*, const std::string&>{"--json", o.json}, {"--csv", o.csv}})
    if (!path.empty()) io::check_output(path, io::OutputOptions{flag, {o.data}});
  if (!o.json.empty() && !o.csv.empty() && (o.json == o.csv || io::same_file(o.json, o.csv)))
    throw UsageError("--json and --csv name the same file");
  if (!o.checkpoint.empty()) io::check_output(o.checkpoint, io::OutputOptions{"--checkpoint", {o.data}});
}

/// Memory for the vectors of dimension d the run keeps (per worker: the session state, at most
/// 4 + delay + 1 arrays, its iterate and gradient; and the reference solution's), refused before
/// allocating when it exceeds what is available: d and the delay come from the input.
void check_run_memory(int64_t d, int workers_here, int delay_bound) {
  const long double per_worker = 8.0L * d * (4.0L + (delay_bound + 1.0L) + 4.0L);
  const long double total = per_worker * workers_here + 8.0L * d * 16.0L;
  io::check_allocation(total >= 1.8e19L ? UINT64_MAX : static_cast<uint64_t>(total),
                       "the run (d = " + std::to_string(d) + " features, " + std::to_string(workers_here) +
                           " worker(s) in this process, delay bound " + std::to_string(delay_bound) + ")");
}

int run(int argc, char** argv) {
  Context c;
  c.opt = parse(argc, argv);
  const Options& o = c.opt;
  const std::vector<RunSpec> runs = runs_of(o);
  check_flags_apply(o, runs);
  // One communicator per process (mpi, nccl), or run_local's threads (local).
  std::unique_ptr<Communicator> world;
  int workers = o.workers;
  if (o.backend == "mpi") {
    world = make_mpi_world();
  } else if (o.backend == "nccl") {
    world = make_nccl_world();
  }
  if (world) {
    workers = world->size();
    if (o.given.count("--workers") && o.workers != workers)
      throw UsageError("--workers " + std::to_string(o.workers) + ": the " + o.backend + " backend has " +
                       std::to_string(workers) + " rank(s) (the launcher's -n decides; drop --workers)");
  }
  const bool root = !world || world->rank() == 0;
  if (root) check_outputs(o);
  c.delay_bound = o.delay;
  if (o.delay_mode == DelayMode::kTable) c.delay_table = read_delay_table(o.delay_table, workers, &c.delay_bound);
  c.data = load_libsvm(o.data, o.features, o.bias);
  check_run_memory(c.data.cols, world ? 1 : workers, c.delay_bound);
  const Loss loss = o.loss == "squared" ? Loss::kSquared : Loss::kLogistic;
  Problem unreg(c.data, workers, loss, 0.0);
  c.L0 = unreg.smoothness_without_reg();
  c.lambda = o.l2 == "auto" ? c.L0 / 100.0 : to_double("--l2", o.l2);
  c.L = c.L0 + c.lambda;
  c.problem = std::make_unique<Problem>(c.data, workers, loss, c.lambda);
  c.data_digest = data_digest(c, workers);
  if (o.batch > 0) {
    int64_t fewest = c.problem->rows_of(0);
    for (int i = 1; i < workers; ++i) fewest = std::min(fewest, c.problem->rows_of(i));
    if (o.batch > fewest)
      throw UsageError("--batch " + std::to_string(o.batch) + " exceeds the " + std::to_string(fewest) +
                       " rows of the smallest worker's share of the data");
  }
  if (o.l1 > 0) {
    // x* of the composite problem by proximal gradient in double (step 1/L), until the iterate stops
    // moving: a fixed point, or 64 steps in a row that move it by rounding only (8 ulp of |x|_inf;
    // the iteration can cycle between neighbouring doubles forever).
    std::vector<double> x(static_cast<size_t>(c.problem->dim()), 0.0), g(x.size()), prev;
    constexpr int kMaxProxSteps = 200000;
    int it = 0, stalled = 0;
    double move = 0;
    for (; it < kMaxProxSteps && stalled < 64; ++it) {
      prev = x;
      c.problem->gradient(x, -1, g);
      for (size_t j = 0; j < x.size(); ++j) x[j] -= g[j] / c.L;
      apply_prox(Regularizer::kL1, o.l1 / c.L, x);
      if (x == prev) break;
      double top = 0;
      move = 0;
      for (size_t j = 0; j < x.size(); ++j) {
        move = std::max(move, std::fabs(x[j] - prev[j]));
        top = std::max(top, std::fabs(x[j]));
      }
      stalled = move <= 8 * DBL_EPSILON * top ? stalled + 1 : 0;
    }
    if (it == kMaxProxSteps)
      GCOMP_FAIL(gcompErrorInvalidArgument, "the reference solution with --l1 did not converge in " +
                                                std::to_string(kMaxProxSteps) + " proximal steps (last move " +
                                                std::to_string(move) + "); a larger --l2 makes it better conditioned");
    c.xstar = x;
    c.fstar = c.objective(x);
  } else {
    c.xstar = c.problem->solve();
    c.fstar = c.problem->value(c.xstar);
  }
  for (double v : c.xstar) c.xstar_sq += v * v;
  if (c.xstar_sq == 0) c.xstar_sq = 1;
  {
    std::vector<double> zero(static_cast<size_t>(c.problem->dim()), 0.0), g0(zero.size());
    c.problem->gradient(zero, -1, g0);
    for (double v : g0) c.grad0_inf = std::max(c.grad0_inf, std::fabs(v));
  }
  const bool progress = root && !o.quiet && ::isatty(2);
  std::vector<RunResult> results;
  for (const RunSpec& r : runs) {
    RunResult result;
    if (world) {
      run_rank(c, *world, r, result, progress);
    } else {
      run_local(workers, [&](Communicator& comm) { run_rank(c, comm, r, result, progress); });
    }
    results.push_back(std::move(result));
  }
  if (root) {
    print_table(c, results);
    write_outputs(c, results);
    io::flush_stdout();
  }
  return 0;
}

}  // namespace

/// A fatal error ends the whole job: under MPI (mpi backend, or nccl bootstrapped over MPI) every
/// rank is terminated at once (abort_mpi_job), so that no peer waits for this one in a collective
/// (up to the collective timeout) or in MPI_Finalize (forever). Elsewhere it just exits.
int fail(int rc) {
  std::fflush(stderr);
  abort_mpi_job(rc);
  return rc;
}

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "gcomp-train: %s\n%s", printable(e.what(), SIZE_MAX).c_str(), usage().c_str());
    return fail(2);
  } catch (const gcomp::Error& e) {
    std::fprintf(stderr, "gcomp-train: error: %s (%s)\n", printable(e.what(), SIZE_MAX).c_str(),
                 gcompGetErrorString(e.status()));
    return fail(1);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gcomp-train: error: %s\n", printable(e.what(), SIZE_MAX).c_str());
    return fail(1);
  }
}
