// meshctl doctor: the pure checks (kernel release, capabilities, agent,
// pins, probe answers), their table/JSON and exit code, and that the helper
// and map type tables match what the compiled objects really use.
#include <bpf/libbpf.h>
#include <linux/bpf.h>

#include <gtest/gtest.h>

#include <elf.h>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <vector>
#include <set>

#include "commands/commands.h"
#include "probe/doctor_checks.h"

namespace aimesh {
namespace {

using nlohmann::json;

TEST(DoctorTest, ParsesKernelReleases) {
  auto v = parseKernelRelease("6.18.44-fc-v669");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->major, 6);
  EXPECT_EQ(v->minor, 18);
  EXPECT_EQ(v->patch, 44);
  auto short_ = parseKernelRelease("5.15");
  ASSERT_TRUE(short_.ok());
  EXPECT_EQ(short_->minor, 15);
  EXPECT_EQ(short_->patch, 0);
  EXPECT_FALSE(parseKernelRelease("").ok());
  EXPECT_FALSE(parseKernelRelease("linux").ok());
}

TEST(DoctorTest, KernelVersionNeeds518) {
  EXPECT_EQ(checkKernelVersion("6.18.44-fc-v669").state, CheckState::kPass);
  EXPECT_EQ(checkKernelVersion("5.18.0").state, CheckState::kPass);
  CheckResult old = checkKernelVersion("5.17.9-generic");
  EXPECT_EQ(old.state, CheckState::kFail);
  EXPECT_EQ(old.detail, "5.17.9-generic (need >= 5.18)");
  EXPECT_NE(old.hint.find("5.18"), std::string::npos);
  EXPECT_EQ(checkKernelVersion("4.19.0").state, CheckState::kFail);
  EXPECT_EQ(checkKernelVersion("garbage").state, CheckState::kFail);
}

const char* kRootStatus =
    "Name:\tmeshctl\nUmask:\t0022\nState:\tR (running)\n"
    "CapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t000001ffffffffff\n"
    "CapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\nNoNewPrivs:\t0\n";

TEST(DoctorTest, ParsesCapEffFromProcStatus) {
  auto caps = parseCapEff(kRootStatus);
  ASSERT_TRUE(caps.ok());
  EXPECT_EQ(*caps, 0x1ffffffffffull);
  EXPECT_TRUE(missingCapabilities(*caps).empty());
  EXPECT_FALSE(parseCapEff("Name:\tx\nCapPrm:\t0\n").ok());
  EXPECT_FALSE(parseCapEff("CapEff:\t\n").ok());
}

TEST(DoctorTest, NamesTheMissingCapabilities) {
  // An unprivileged user: nothing.
  EXPECT_EQ(missingCapabilities(0),
            (std::vector<std::string>{"CAP_BPF", "CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_PERFMON"}));
  // Root minus CAP_BPF (39) and CAP_PERFMON (38), e.g. an old container runtime.
  uint64_t mask = 0x1ffffffffffull & ~(1ull << 39) & ~(1ull << 38);
  EXPECT_EQ(missingCapabilities(mask), (std::vector<std::string>{"CAP_BPF", "CAP_PERFMON"}));
  // Exactly the four (what the Helm chart grants).
  uint64_t four = (1ull << 39) | (1ull << 12) | (1ull << 21) | (1ull << 38);
  EXPECT_TRUE(missingCapabilities(four).empty());

  EXPECT_EQ(checkCapabilities(std::string(kRootStatus)).state, CheckState::kPass);
  CheckResult c = checkCapabilities(std::string("CapEff:\t0000000000201000\n"));  // NET_ADMIN, SYS_ADMIN
  EXPECT_EQ(c.state, CheckState::kFail);
  EXPECT_EQ(c.detail, "missing CAP_BPF, CAP_PERFMON (CapEff 0000000000201000)");
  EXPECT_NE(c.hint.find("run as root"), std::string::npos);
}

TEST(DoctorTest, AgentCheck) {
  Result<json> notRunning = Error::msg(
      "aimesh agent is not running at /run/aimesh/agent.sock (no such socket file).\n  Start it with: ...");
  CheckResult a = checkAgent(notRunning, "/run/aimesh/agent.sock");
  EXPECT_EQ(a.state, CheckState::kWarn);
  EXPECT_EQ(a.detail, "not running at /run/aimesh/agent.sock");

  Result<json> denied = Error{EACCES, "connect /run/aimesh/agent.sock"};
  EXPECT_EQ(checkAgent(denied, "/run/aimesh/agent.sock").state, CheckState::kFail);

  Result<json> ready = json{{"version", "0.1.0"}, {"pid", 42}, {"ready", true}};
  CheckResult r = checkAgent(ready, "/tmp/a.sock");
  EXPECT_EQ(r.state, CheckState::kPass);
  EXPECT_EQ(r.detail, "ready (version 0.1.0, pid 42, /tmp/a.sock)");

  Result<json> notReady = json{{"version", "0.1.0"}, {"pid", 42}, {"ready", false}, {"last_error", "bad port"}};
  CheckResult n = checkAgent(notReady, "/tmp/a.sock");
  EXPECT_EQ(n.state, CheckState::kFail);
  EXPECT_EQ(n.detail, "running but not ready (pid 42): bad port");

  Result<json> error = json{{"error", "unknown method"}};
  EXPECT_EQ(checkAgent(error, "/tmp/a.sock").state, CheckState::kFail);
}

TEST(DoctorTest, PinsCheck) {
  PinCounts none;
  EXPECT_EQ(checkPins("/sys/fs/bpf/aimesh", none, false).state, CheckState::kWarn);
  EXPECT_EQ(checkPins("/sys/fs/bpf/aimesh", none, false).detail,
            "/sys/fs/bpf/aimesh does not exist (no data plane loaded)");
  // A ready agent that pins nothing there: meshctl looks in the wrong place.
  EXPECT_EQ(checkPins("/sys/fs/bpf/aimesh", none, true).state, CheckState::kFail);
  PinCounts full{true, 17, 11, 1};
  CheckResult p = checkPins("/sys/fs/bpf/aimesh", full, true);
  EXPECT_EQ(p.state, CheckState::kPass);
  EXPECT_EQ(p.detail, "/sys/fs/bpf/aimesh: 17 maps, 11 links, 1 tc programs");
  PinCounts mapsOnly{true, 17, 0, 0};
  EXPECT_EQ(checkPins("/x", mapsOnly, false).state, CheckState::kWarn);
  EXPECT_EQ(checkPins("/x", Result<PinCounts>(Error{EACCES, "read /x"}), false).state, CheckState::kFail);
}

TEST(DoctorTest, ProbeAnswers) {
  const ProgramTypeUse& use = programTypesUsed().front();
  EXPECT_EQ(checkProgramType(use, 1).state, CheckState::kPass);
  EXPECT_EQ(checkProgramType(use, 0).state, CheckState::kFail);
  // The probe could not run (no CAP_BPF): unknown, not a kernel failure.
  EXPECT_EQ(checkProgramType(use, -EPERM).state, CheckState::kWarn);
  EXPECT_EQ(checkMapType(BPF_MAP_TYPE_RINGBUF, "ringbuf", 0).name, "map type ringbuf");
  EXPECT_EQ(checkMapType(BPF_MAP_TYPE_RINGBUF, "ringbuf", 0).state, CheckState::kFail);

  std::vector<int> all(use.helpers.size(), 1);
  CheckResult ok = checkHelpers(use, all);
  EXPECT_EQ(ok.state, CheckState::kPass);
  EXPECT_EQ(ok.name, "helpers of cgroup_sock_addr");
  std::vector<int> someMissing = all;
  someMissing.back() = 0;  // set_retval, as on a 5.15 kernel
  CheckResult missing = checkHelpers(use, someMissing);
  EXPECT_EQ(missing.state, CheckState::kFail);
  EXPECT_EQ(missing.detail, "missing: bpf_set_retval");
  std::vector<int> unknown = all;
  unknown[0] = -EPERM;
  EXPECT_EQ(checkHelpers(use, unknown).state, CheckState::kWarn);
}

std::vector<CheckResult> sampleChecks() {
  return {
      {"kernel", "kernel version", CheckState::kPass, "6.18.44 (need >= 5.18)", ""},
      {"kernel", "BTF", CheckState::kPass, "/sys/kernel/btf/vmlinux (1000 types)", ""},
      {"mounts", "bpffs", CheckState::kWarn, "/sys/fs/bpf is not a bpffs mount", "mount -t bpf bpf /sys/fs/bpf"},
      {"agent", "agent", CheckState::kFail, "running but not ready (pid 7)", "see meshctl status"},
  };
}

// Without socket iterators (Linux < 6.5) aimesh balances but cannot close
// connections: a warning that says so, not a failure.
TEST(DoctorTest, SocketIteratorsWarnWhenMissing) {
  CheckResult ok = checkSocketIterators(Status{});
  EXPECT_EQ(ok.state, CheckState::kPass);
  CheckResult missing = checkSocketIterators(Error::fromCode(22, "load iter/tcp"));
  EXPECT_EQ(missing.state, CheckState::kWarn);
  EXPECT_NE(missing.detail.find("load iter/tcp"), std::string::npos) << missing.detail;
  EXPECT_NE(missing.hint.find("6.5"), std::string::npos) << missing.hint;
  EXPECT_EQ(doctorExitCode({missing}), 0);
}

TEST(DoctorTest, TableOneLinePerCheckWithFixHints) {
  CommandOutput r = formatDoctor(sampleChecks(), OutputFormat::kTable);
  EXPECT_EQ(r.exitCode, kExitError);
  EXPECT_EQ(r.out,
            "kernel\n"
            "  [pass] kernel version  6.18.44 (need >= 5.18)\n"
            "  [pass] BTF             /sys/kernel/btf/vmlinux (1000 types)\n"
            "mounts\n"
            "  [warn] bpffs           /sys/fs/bpf is not a bpffs mount\n"
            "         fix: mount -t bpf bpf /sys/fs/bpf\n"
            "agent\n"
            "  [fail] agent           running but not ready (pid 7)\n"
            "         fix: see meshctl status\n"
            "2 passed, 1 warning, 1 failed\n");
}

TEST(DoctorTest, ExitCodeFailsOnlyOnFailures) {
  auto checks = sampleChecks();
  EXPECT_EQ(doctorExitCode(checks), 1);
  checks.pop_back();  // only a warning left
  EXPECT_EQ(doctorExitCode(checks), 0);
  EXPECT_EQ(formatDoctor(checks, OutputFormat::kTable).exitCode, kExitOk);
  EXPECT_EQ(formatDoctor(checks, OutputFormat::kJson).exitCode, kExitOk);
  EXPECT_EQ(doctorExitCode({}), 0);
}

TEST(DoctorTest, JsonIsAListOfChecks) {
  CommandOutput r = formatDoctor(sampleChecks(), OutputFormat::kJson);
  EXPECT_EQ(r.exitCode, kExitError);
  json j = json::parse(r.out);
  EXPECT_EQ(j["ok"], false);
  EXPECT_EQ(j["summary"], json({{"pass", 2}, {"warn", 1}, {"fail", 1}}));
  ASSERT_EQ(j["checks"].size(), 4u);
  EXPECT_EQ(j["checks"][2], json({{"group", "mounts"},
                                  {"name", "bpffs"},
                                  {"status", "warn"},
                                  {"detail", "/sys/fs/bpf is not a bpffs mount"},
                                  {"hint", "mount -t bpf bpf /sys/fs/bpf"}}));
}

// The instructions of an object's .text section: its subprograms (global
// functions such as lib/lb.h's aimesh_lb_*), which libbpf appends to the
// programs that call them only at load.
std::vector<bpf_insn> textSection(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string elf((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<bpf_insn> out;
  if (elf.size() < sizeof(Elf64_Ehdr)) return out;
  Elf64_Ehdr eh;
  std::memcpy(&eh, elf.data(), sizeof(eh));
  auto section = [&](size_t i) {
    Elf64_Shdr sh{};
    if (eh.e_shoff + (i + 1) * sizeof(Elf64_Shdr) <= elf.size())
      std::memcpy(&sh, elf.data() + eh.e_shoff + i * sizeof(Elf64_Shdr), sizeof(sh));
    return sh;
  };
  Elf64_Shdr names = section(eh.e_shstrndx);
  for (size_t i = 0; i < eh.e_shnum; ++i) {
    Elf64_Shdr sh = section(i);
    if (names.sh_offset + sh.sh_name >= elf.size() || std::strcmp(elf.data() + names.sh_offset + sh.sh_name, ".text"))
      continue;
    if (sh.sh_offset + sh.sh_size > elf.size()) continue;
    out.resize(sh.sh_size / sizeof(bpf_insn));
    std::memcpy(out.data(), elf.data() + sh.sh_offset, out.size() * sizeof(bpf_insn));
  }
  return out;
}

// The helper table in doctor_checks.cc must be exactly what the objects
// call: read every helper call (BPF_JMP|BPF_CALL with src_reg 0, imm = the
// BPF_FUNC_* id) from each program of the compiled objects, and from the
// subprograms for the program types that call subprograms.
TEST(DoctorTest, HelperAndMapTablesMatchTheObjects) {
  std::map<int, std::set<int>> called;  // prog type → helper ids
  std::set<int> mapTypes;
  for (const char* name : {"sock_lb", "sock_ops", "sock_telemetry", "tc_lb"}) {
    std::string path = std::string(AIMESH_BPF_DIR) + "/" + name + ".bpf.o";
    bpf_object* obj = bpf_object__open_file(path.c_str(), nullptr);
    ASSERT_NE(obj, nullptr) << path;
    std::set<int> subprogHelpers;
    for (const bpf_insn& in : textSection(path))
      if (in.code == (BPF_JMP | BPF_CALL) && in.src_reg == 0) subprogHelpers.insert(in.imm);
    bpf_program* prog;
    bpf_object__for_each_program(prog, obj) {
      auto& ids = called[bpf_program__type(prog)];
      const bpf_insn* insns = bpf_program__insns(prog);
      for (size_t i = 0; i < bpf_program__insn_cnt(prog); ++i) {
        if (insns[i].code != (BPF_JMP | BPF_CALL)) continue;
        if (insns[i].src_reg == 0) ids.insert(insns[i].imm);
        if (insns[i].src_reg == BPF_PSEUDO_CALL) ids.insert(subprogHelpers.begin(), subprogHelpers.end());
      }
    }
    bpf_map* map;
    bpf_object__for_each_map(map, obj) {
      if (bpf_map__is_internal(map)) continue;  // .rodata/.bss: arrays libbpf makes
      mapTypes.insert(bpf_map__type(map));
    }
    bpf_object__close(obj);
  }
  std::map<int, std::set<int>> table;
  for (const auto& use : programTypesUsed()) {
    for (const auto& h : use.helpers) table[use.type].insert(h.id);
  }
  EXPECT_EQ(table, called);
  std::set<int> mapTable;
  for (const auto& [type, name] : mapTypesUsed()) mapTable.insert(type);
  EXPECT_EQ(mapTable, mapTypes);
  // The names are libbpf's.
  for (const auto& use : programTypesUsed())
    EXPECT_STREQ(use.name, libbpf_bpf_prog_type_str(static_cast<bpf_prog_type>(use.type)));
  for (const auto& [type, name] : mapTypesUsed())
    EXPECT_STREQ(name, libbpf_bpf_map_type_str(static_cast<bpf_map_type>(type)));
}

}  // namespace
}  // namespace aimesh
