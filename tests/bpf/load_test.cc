// bpf tier: every BPF object the build produces opens and passes the verifier
// on this kernel, and the sock_lb programs carry the program and attach types
// the agent attaches them as. Objects are found by listing AIMESH_BPF_DIR, so
// a new *.bpf.c is covered without touching this file.
//
// Safety: nothing is attached and nothing is pinned. Every map's pin path is
// cleared after open, so LIBBPF_PIN_BY_NAME does not pin into /sys/fs/bpf.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>

#include "fixtures/bpf_objects.h"
#include "fixtures/libbpf_log.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace aimesh {
namespace {

namespace fs = std::filesystem;

struct ObjectDeleter {
  void operator()(bpf_object* o) const { bpf_object__close(o); }
};
using ObjectPtr = std::unique_ptr<bpf_object, ObjectDeleter>;

using testing::bpfObjects;
using testing::LibbpfLogCapture;

// Opens `path` with every map's pinning turned off. kernel_log_level comes from
// AIMESH_BPF_LOG_LEVEL (default 0: libbpf still fetches the log on failure).
ObjectPtr openUnpinned(const std::string& path, std::string* err) {
  LIBBPF_OPTS(bpf_object_open_opts, oo);
  if (const char* lvl = std::getenv("AIMESH_BPF_LOG_LEVEL")) oo.kernel_log_level = static_cast<__u32>(std::atoi(lvl));
  ObjectPtr obj(bpf_object__open_file(path.c_str(), &oo));
  if (!obj) {
    *err = "bpf_object__open_file(" + path + ") failed: errno " + std::to_string(errno);
    return nullptr;
  }
  bpf_map* m;
  bpf_object__for_each_map(m, obj.get()) {
    if (int e = bpf_map__set_pin_path(m, nullptr); e != 0) {
      *err = std::string("bpf_map__set_pin_path(") + bpf_map__name(m) + ", NULL) failed: " + std::to_string(e);
      return nullptr;
    }
  }
  return obj;
}

std::string objectStem(const std::string& path) {
  std::string name = fs::path(path).filename().string();
  return name.substr(0, name.size() - std::string(".bpf.o").size());
}

TEST(BpfObjects, BuildProducedTheKnownObjects) {
  std::set<std::string> stems;
  for (const auto& p : bpfObjects()) stems.insert(objectStem(p));
  EXPECT_TRUE(stems.count("sock_lb")) << "no sock_lb.bpf.o in " << AIMESH_BPF_DIR;
  EXPECT_TRUE(stems.count("lb_harness")) << "no lb_harness.bpf.o in " << AIMESH_BPF_DIR;
}

class BpfObjectLoad : public ::testing::TestWithParam<std::string> {};

TEST_P(BpfObjectLoad, OpensAndPassesVerifier) {
  const std::string path = GetParam();
  LibbpfLogCapture log;
  std::string err;
  ObjectPtr obj = openUnpinned(path, &err);
  ASSERT_TRUE(obj) << err << "\nlibbpf output:\n" << log.text();

  // Remember which by-name pins already existed (another test's leftovers are
  // not ours to judge), so we can check this load created none.
  std::map<std::string, bool> pinnedBefore;
  bpf_map* m;
  bpf_object__for_each_map(m, obj.get()) {
    EXPECT_EQ(bpf_map__pin_path(m), nullptr) << bpf_map__name(m);
    if (bpf_map__is_internal(m)) continue;  // .bss/.rodata are never pinned by name
    std::string pin = std::string("/sys/fs/bpf/") + bpf_map__name(m);
    std::error_code ec;
    pinnedBefore[pin] = fs::exists(pin, ec);
  }

  int rc = bpf_object__load(obj.get());
  ASSERT_EQ(rc, 0) << "bpf_object__load(" << path << ") failed: " << rc << "\nlibbpf output (verifier log):\n"
                   << log.text();

  int progs = 0;
  bpf_program* p;
  bpf_object__for_each_program(p, obj.get()) {
    ++progs;
    EXPECT_GE(bpf_program__fd(p), 0) << bpf_program__name(p);
  }
  EXPECT_GT(progs, 0) << path << " has no programs";
  bpf_object__for_each_map(m, obj.get()) {
    EXPECT_GE(bpf_map__fd(m), 0) << bpf_map__name(m);
    EXPECT_FALSE(bpf_map__is_pinned(m)) << bpf_map__name(m);
  }
  std::error_code ec;
  for (const auto& [pin, existed] : pinnedBefore)
    EXPECT_TRUE(existed || !fs::exists(pin, ec)) << "load pinned " << pin;
}

INSTANTIATE_TEST_SUITE_P(AllObjects, BpfObjectLoad, ::testing::ValuesIn(bpfObjects()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string n = objectStem(info.param);
                           for (char& c : n)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return n;
                         });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(BpfObjectLoad);

struct ExpectedProgram {
  std::string section;
  bpf_prog_type type;
  bpf_attach_type attach;
};

// Program and attach types are what the kernel checks at attach time; a
// section typo would load fine and then fail (or hook the wrong call) there.
TEST(BpfObjects, SockLbProgramTypes) {
  const std::vector<ExpectedProgram> expected = {
      {"cgroup/connect4", BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET4_CONNECT},
      {"cgroup/connect6", BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET6_CONNECT},
      {"cgroup/sendmsg4", BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_UDP4_SENDMSG},
      {"cgroup/sendmsg6", BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_UDP6_SENDMSG},
      {"cgroup/recvmsg4", BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_UDP4_RECVMSG},
      {"cgroup/recvmsg6", BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_UDP6_RECVMSG},
      {"cgroup/getpeername4", BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET4_GETPEERNAME},
      {"cgroup/getpeername6", BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET6_GETPEERNAME},
  };
  LibbpfLogCapture log;
  std::string err;
  ObjectPtr obj = openUnpinned(std::string(AIMESH_BPF_DIR) + "/sock_lb.bpf.o", &err);
  ASSERT_TRUE(obj) << err << "\n" << log.text();
  ASSERT_EQ(bpf_object__load(obj.get()), 0) << log.text();

  std::map<std::string, bpf_program*> bySection;
  bpf_program* p;
  bpf_object__for_each_program(p, obj.get()) {
    EXPECT_TRUE(bySection.emplace(bpf_program__section_name(p), p).second)
        << "two programs in section " << bpf_program__section_name(p);
  }
  EXPECT_EQ(bySection.size(), expected.size());
  for (const auto& e : expected) {
    auto it = bySection.find(e.section);
    if (it == bySection.end()) {
      ADD_FAILURE() << "sock_lb has no program in SEC(\"" << e.section << "\")";
      continue;
    }
    EXPECT_EQ(bpf_program__type(it->second), e.type)
        << e.section << " (" << bpf_program__name(it->second) << ") program type";
    EXPECT_EQ(bpf_program__expected_attach_type(it->second), e.attach)
        << e.section << " (" << bpf_program__name(it->second) << ") expected attach type";
  }
}

TEST(BpfObjects, HarnessIsSyscallProgram) {
  LibbpfLogCapture log;
  std::string err;
  ObjectPtr obj = openUnpinned(std::string(AIMESH_BPF_DIR) + "/lb_harness.bpf.o", &err);
  ASSERT_TRUE(obj) << err << "\n" << log.text();
  bpf_program* p = bpf_object__find_program_by_name(obj.get(), "aimesh_select");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(bpf_program__type(p), BPF_PROG_TYPE_SYSCALL);
}

}  // namespace
}  // namespace aimesh
