// SPDX-License-Identifier: Apache-2.0
#include "host/common/thread_pool.hpp"

#include "host/common/env.hpp"

#include <gcomp/error.hpp>
#include <gcomp/threads.hpp>

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <exception>
#include <limits>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace gcomp {
namespace {

constexpr int kMaxThreads = 256;
constexpr int kDefaultMaxThreads = 16;

int default_threads() {
  // GCOMP_CPU_THREADS when set (1..256; any other value is an error naming it), else the CPUs.
  if (const std::optional<int64_t> env = detail::env_int(detail::EnvVarId::kCpuThreads)) return static_cast<int>(*env);
  cpu_set_t set;
  CPU_ZERO(&set);
  int cpus = 0;
  if (sched_getaffinity(0, sizeof set, &set) == 0) cpus = CPU_COUNT(&set);
  if (cpus < 1) cpus = static_cast<int>(std::thread::hardware_concurrency());
  return std::clamp(cpus, 1, kDefaultMaxThreads);
}

std::atomic<int> g_threads_override{0};

}  // namespace

int cpu_threads() {
  const int set = g_threads_override.load(std::memory_order_relaxed);
  if (set > 0) return set;
  static const int kDefault = default_threads();
  return kDefault;
}

void set_cpu_threads(int num_threads) {
  GCOMP_EXPECTS(num_threads >= 0 && num_threads <= kMaxThreads, gcompErrorInvalidArgument,
                "set_cpu_threads: " + std::to_string(num_threads) + " is outside 0.." + std::to_string(kMaxThreads));
  g_threads_override.store(num_threads, std::memory_order_relaxed);
}

namespace detail {
namespace {

struct Job {
  const std::function<void(int64_t)>* fn = nullptr;
  int64_t num_tasks = 0;
  int max_helpers = 0;
  std::atomic<int64_t> next{0};
  int helpers = 0;  // workers inside this job (guarded by the pool mutex)
  std::mutex error_mutex;
  int64_t error_task = std::numeric_limits<int64_t>::max();
  std::exception_ptr error;

  void run_tasks() {
    for (int64_t t = next.fetch_add(1, std::memory_order_relaxed); t < num_tasks;
         t = next.fetch_add(1, std::memory_order_relaxed)) {
      try {
        (*fn)(t);
      } catch (...) {
        const std::lock_guard<std::mutex> lock(error_mutex);
        if (t < error_task) {
          error_task = t;
          error = std::current_exception();
        }
      }
    }
  }
  bool wants_helper() const { return helpers < max_helpers && next.load(std::memory_order_relaxed) < num_tasks; }
};

class Pool {
 public:
  static Pool& instance() {
    static Pool pool;
    return pool;
  }

  ~Pool() {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    work_cv_.notify_all();
    for (std::thread& t : workers_) t.join();
  }

  void run(Job& job) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      while (static_cast<int>(workers_.size()) < job.max_helpers) workers_.emplace_back([this] { worker_loop(); });
      jobs_.push_back(&job);
    }
    work_cv_.notify_all();
    job.run_tasks();
    std::unique_lock<std::mutex> lock(mutex_);
    jobs_.erase(std::find(jobs_.begin(), jobs_.end(), &job));
    done_cv_.wait(lock, [&] { return job.helpers == 0; });
  }

 private:
  Pool() = default;

  void worker_loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      Job* job = nullptr;
      work_cv_.wait(lock, [&] {
        if (stop_) return true;
        for (Job* j : jobs_)
          if (j->wants_helper()) {
            job = j;
            return true;
          }
        return false;
      });
      if (stop_) return;
      ++job->helpers;
      lock.unlock();
      job->run_tasks();
      lock.lock();
      if (--job->helpers == 0) done_cv_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  std::deque<Job*> jobs_;
  std::vector<std::thread> workers_;
  bool stop_ = false;
};

}  // namespace

int parallel_width(int64_t num_tasks) {
  return static_cast<int>(std::min<int64_t>(std::max<int64_t>(num_tasks, 1), cpu_threads()));
}

void parallel_for(int64_t num_tasks, const std::function<void(int64_t)>& fn) {
  if (num_tasks <= 0) return;
  Job job;
  job.fn = &fn;
  job.num_tasks = num_tasks;
  job.max_helpers = parallel_width(num_tasks) - 1;
  if (job.max_helpers == 0)
    job.run_tasks();
  else
    Pool::instance().run(job);
  if (job.error) std::rethrow_exception(job.error);
}

}  // namespace detail
}  // namespace gcomp
