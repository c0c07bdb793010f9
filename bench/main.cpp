// SPDX-License-Identifier: Apache-2.0
// gcomp-bench: `gcomp-bench <subcommand> [options]`. Subcommands live in a table: codecs (kernel
// throughput), comm (the nccl-tests style collective table), bits (bits/element against omega).
#include "bench/bench_common.hpp"

#include <gcomp/comm.hpp>

#include <cstdio>
#include <cstring>
#include <exception>
#include <iterator>

namespace gcomp::bench {
int run_codecs(int argc, char** argv);
int run_comm(int argc, char** argv);
int run_bits(int argc, char** argv);
}  // namespace gcomp::bench

namespace {

const gcomp::bench::Subcommand kSubcommands[] = {
    {"codecs", "encode/decode throughput of every codec vs same-run copy bandwidth", gcomp::bench::run_codecs},
    {"comm", "nccl-tests style table: fp32 allreduce vs compressed allgather / two-way exchange",
     gcomp::bench::run_comm},
    {"bits", "bits per coordinate vs declared and measured omega, ratio R to the lower bound", gcomp::bench::run_bits},
};

void usage() {
  std::printf("usage: gcomp-bench <subcommand> [options]   (gcomp-bench <subcommand> --help)\nsubcommands:\n");
  for (const auto& s : kSubcommands) std::printf("  %-8s %s\n", s.name, s.summary);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "-h") == 0 || std::strcmp(argv[1], "--help") == 0) {
    usage();
    return argc < 2 ? 2 : 0;
  }
  for (const auto& s : kSubcommands) {
    if (std::strcmp(argv[1], s.name) != 0) continue;
    try {
      const int rc = s.run(argc - 1, argv + 1);
      gcomp::io::flush_stdout();  // a lost table is a failure (`> /dev/full`)
      return rc;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "gcomp-bench %s: %s\n", s.name, e.what());
      std::fflush(stderr);
      gcomp::abort_mpi_job(1);  // under MPI: end every rank now, none left waiting for this one
      return 1;
    }
  }
  std::fprintf(stderr, "gcomp-bench: unknown subcommand '%s'\n", argv[1]);
  usage();
  return 2;
}
