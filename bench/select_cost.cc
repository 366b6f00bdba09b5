// select-cost: what choosing a backend costs in the kernel, per call, for a
// plain service and for a split over services, measured with the real
// selection code (bpf/lib/lb.h, through the test harness
// tests/bpf/lb_harness.bpf.c) under BPF_PROG_TEST_RUN, timed by the
// kernel's BPF run-time statistics (the program's own run time, not the
// system call around it): no network, no client, no hook in the number.
// Each case is run --rounds times; the median is printed with its ratio to
// the plain random service measured in the same run.
// See docs/benchmarks.md ("select-cost").
//
// Loads its own copy of the harness with every map's pin path cleared
// (nothing is pinned, nothing is attached).
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstring>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "aimesh/abi.h"
#include "lb_harness.skel.h"
#include "support/bench_run.h"

namespace aimesh {
namespace {

struct Harness {
  lb_harness* skel = nullptr;
  Harness() {
    skel = lb_harness__open();
    if (!skel) throw std::runtime_error("open the lb_harness object");
    bpf_map* m;
    bpf_object__for_each_map(m, skel->obj) bpf_map__set_pin_path(m, nullptr);
    if (lb_harness__load(skel) != 0) throw std::runtime_error("load the lb_harness object");
  }
  ~Harness() { lb_harness__destroy(skel); }

  void put(bpf_map* map, const void* k, size_t ks, const void* v, size_t vs) {
    if (bpf_map__update_elem(map, k, ks, v, vs, BPF_ANY) != 0) throw std::runtime_error("update a map");
  }
  // Service `id` with `n` active IPv4 backends (ids id*100+1..), one slot each.
  void plain(uint32_t id, uint32_t n, uint8_t algorithm) {
    for (uint32_t i = 0; i < n; ++i) {
      uint32_t bid = id * 100 + 1 + i;
      aimesh_backend b{};
      b.addr[10] = b.addr[11] = 0xff;
      b.addr[12] = 10;
      b.addr[15] = static_cast<uint8_t>(bid);
      b.port = htons(8000);
      b.family = AIMESH_FAMILY_V4;
      b.service_id = id;
      b.weight = 1;
      put(skel->maps.aimesh_backends, &bid, sizeof bid, &b, sizeof b);
      aimesh_slot_key k{id, i};
      aimesh_slot s{bid};
      put(skel->maps.aimesh_slots, &k, sizeof k, &s, sizeof s);
    }
    aimesh_service s{};
    s.slot_count = n;
    s.backend_count = n;
    s.algorithm = algorithm;
    put(skel->maps.aimesh_services, &id, sizeof id, &s, sizeof s);
  }
  void split(uint32_t id, const std::vector<std::pair<uint32_t, uint32_t>>& targets) {
    aimesh_service s{};
    s.flags = AIMESH_SVC_F_SPLIT;
    put(skel->maps.aimesh_services, &id, sizeof id, &s, sizeof s);
    aimesh_split sp{};
    sp.count = static_cast<uint32_t>(targets.size());
    for (size_t i = 0; i < targets.size(); ++i) sp.targets[i] = {targets[i].first, targets[i].second};
    put(skel->maps.aimesh_splits, &id, sizeof id, &sp, sizeof sp);
  }
  // The selection program's own run time per call (BPF run-time
  // statistics: the kernel's clock around the program, no system call in
  // it) over `calls` test runs for service `id`.
  double perCall(uint32_t id, uint32_t calls) {
    aimesh_select_ctx ctx{};
    ctx.service_id = id;
    LIBBPF_OPTS(bpf_test_run_opts, o, .ctx_in = &ctx, .ctx_size_in = sizeof ctx);
    int fd = bpf_program__fd(skel->progs.aimesh_select);
    auto [cnt0, ns0] = stats(fd);
    for (uint32_t i = 0; i < calls; ++i) {
      ctx.rnd = i * 2654435761u;
      if (bpf_prog_test_run_opts(fd, &o) != 0 || ctx.err != 0)
        throw std::runtime_error(fmt::format("test run of service {} failed (err {})", id, ctx.err));
    }
    auto [cnt1, ns1] = stats(fd);
    if (cnt1 <= cnt0) throw std::runtime_error("no BPF run-time statistics (BPF_ENABLE_STATS)");
    return static_cast<double>(ns1 - ns0) / static_cast<double>(cnt1 - cnt0);
  }
  static std::pair<uint64_t, uint64_t> stats(int fd) {
    bpf_prog_info info{};
    uint32_t len = sizeof info;
    if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) throw std::runtime_error("bpf_obj_get_info_by_fd");
    return {info.run_cnt, info.run_time_ns};
  }
};

nlohmann::json run(uint32_t calls, int rounds) {
  Harness h;
  h.plain(1, 4, AIMESH_ALG_RANDOM);
  h.plain(2, 4, AIMESH_ALG_LEAST_CONN);
  h.plain(3, 4, AIMESH_ALG_RANDOM);
  h.plain(4, 4, AIMESH_ALG_LEAST_CONN);
  h.plain(5, 0, AIMESH_ALG_RANDOM);  // no endpoint: a split passes it over
  h.split(10, {{1, 90}, {3, 10}});
  h.split(11, {{2, 90}, {4, 10}});
  h.split(12, {{5, 50}, {1, 50}});
  struct Case {
    const char* name;
    uint32_t id;
  };
  const Case cases[] = {{"plain random, 4 endpoints", 1},
                        {"plain least_conn, 4 endpoints", 2},
                        {"split 90/10 over two random services", 10},
                        {"split 90/10 over two least_conn services", 11},
                        {"split 50/50, one side empty (fail-over half the time)", 12}};
  // Run-time statistics on while this runs (the fd turns them off again).
  int statsFd = bpf_enable_stats(BPF_STATS_RUN_TIME);
  if (statsFd < 0) throw std::runtime_error("BPF_ENABLE_STATS failed");
  std::vector<std::vector<double>> ns(std::size(cases));
  for (int r = 0; r < rounds; ++r) {
    testing::checkInterrupted();
    for (size_t c = 0; c < std::size(cases); ++c) ns[c].push_back(h.perCall(cases[c].id, calls));
  }
  ::close(statsFd);
  double base = testing::median(ns[0]);
  fmt::print("{:<58} {:>10} {:>10}\n", "selection (BPF run time per call, median of rounds)", "ns/call", "vs plain");
  nlohmann::json out;
  for (size_t c = 0; c < std::size(cases); ++c) {
    double m = testing::median(ns[c]);
    fmt::print("{:<58} {:>10.1f} {:>9.2f}x\n", cases[c].name, m, m / base);
    out["cases"].push_back({{"case", cases[c].name}, {"ns_per_call", m}, {"ratio", m / base}, {"rounds", ns[c]}});
  }
  out["calls"] = calls;
  return out;
}

}  // namespace
}  // namespace aimesh

int main(int argc, char** argv) {
  CLI::App app{"select-cost: the kernel's cost of choosing a backend, plain service vs split (BPF_PROG_TEST_RUN)"};
  uint32_t calls = 100000;
  int rounds = 7;
  bool wantJson = false;
  app.add_option("--calls", calls, "test runs per case and round")->capture_default_str()->check(CLI::Range(1000, 10000000));
  app.add_option("--rounds", rounds, "test runs per case (the median is printed)")->capture_default_str()->check(CLI::Range(1, 101));
  app.add_flag("--json", wantJson, "also print the results as one JSON object after the table");
  CLI11_PARSE(app, argc, argv);
  return aimesh::testing::runBenchMain(
      {.name = "select-cost", .needsRootFor = "BPF_PROG_TEST_RUN", .removed = "nothing was attached"}, wantJson,
      [&] { return aimesh::run(calls, rounds); });
}
