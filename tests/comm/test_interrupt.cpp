// SPDX-License-Identifier: Apache-2.0
// set_wait_interrupt_check (issue 18 #15): a blocking wait of the local backend calls the installed
// check while it waits, and a true answer stops it at once (the group is aborted) instead of at the
// collective timeout. The Python extension installs a check that polls for Ctrl-C
// (tests/python/test_arguments.py runs that end to end); the mpi backend's wait is in CommMpi.np4.
#include <gcomp/comm.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

namespace {

using Clock = std::chrono::steady_clock;

std::atomic<bool> g_stop{false};
std::atomic<int> g_calls{0};

bool check() {
  ++g_calls;
  return g_stop.load();
}

TEST(WaitInterrupt, StopsALocalCollectiveLongBeforeItsTimeout) {
  g_stop = false;
  g_calls = 0;
  gcomp::set_wait_interrupt_check(&check);
  auto group = gcomp::make_local_group(2, gcomp::LocalOptions{120000});
  std::thread later([] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    g_stop = true;
  });
  const auto start = Clock::now();
  std::string what;
  gcompStatus_t status = gcompSuccess;
  try {
    group[0]->barrier();  // rank 1 never joins
  } catch (const gcomp::Error& e) {
    what = e.what();
    status = e.status();
  }
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
  later.join();
  gcomp::set_wait_interrupt_check(nullptr);
  EXPECT_EQ(status, gcompErrorTimeout) << what;
  EXPECT_NE(what.find("interrupted on rank 0"), std::string::npos) << what;
  EXPECT_GE(took, 250);
  EXPECT_LT(took, 5000) << "stopped " << took << " ms after the start; the check answered at 300 ms";
  EXPECT_GT(g_calls.load(), 2) << "the check was not polled while waiting";
  EXPECT_TRUE(group[1]->is_aborted()) << "the peers of an interrupted rank fail at once too";
}

TEST(WaitInterrupt, WithoutACheckCollectivesComplete) {
  gcomp::set_wait_interrupt_check(nullptr);
  gcomp::run_local(3, [](gcomp::Communicator& c) {
    for (int i = 0; i < 20; ++i) c.barrier();
  });
}

}  // namespace
