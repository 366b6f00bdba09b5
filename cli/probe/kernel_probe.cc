#include "probe/kernel_probe.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdarg>
#include <cstring>
#include <fstream>
#include <sstream>

namespace aimesh {
namespace {

int quiet(enum libbpf_print_level, const char*, va_list) { return 0; }

// libbpf prints a warning for every failed probe; doctor reports them itself.
class QuietLibbpf {
 public:
  QuietLibbpf() : old_(libbpf_set_print(quiet)) {}
  ~QuietLibbpf() { libbpf_set_print(old_); }
  QuietLibbpf(const QuietLibbpf&) = delete;
  QuietLibbpf& operator=(const QuietLibbpf&) = delete;

 private:
  libbpf_print_fn_t old_;
};

}  // namespace

std::string kernelRelease() {
  utsname u{};
  if (::uname(&u) != 0) return "";
  return u.release;
}

Result<int> loadVmlinuxBtf() {
  QuietLibbpf q;
  btf* b = btf__load_vmlinux_btf();
  if (b == nullptr) return Error::fromErrno("load vmlinux BTF");
  int n = static_cast<int>(btf__type_cnt(b));
  btf__free(b);
  return n;
}

int probeProgramType(int progType) {
  QuietLibbpf q;
  return libbpf_probe_bpf_prog_type(static_cast<bpf_prog_type>(progType), nullptr);
}

int probeMapType(int mapType) {
  QuietLibbpf q;
  return libbpf_probe_bpf_map_type(static_cast<bpf_map_type>(mapType), nullptr);
}

int probeHelper(int progType, int helperId) {
  QuietLibbpf q;
  int rc = libbpf_probe_bpf_helper(static_cast<bpf_prog_type>(progType), static_cast<bpf_func_id>(helperId),
                                   nullptr);
  if (rc <= 0) return rc;
  // libbpf 1.1 calls a helper unsupported only when the verifier log says
  // "invalid func" or "unknown func"; kernels since 6.x say "program of this
  // type cannot use helper" instead, which libbpf takes for "supported". Load
  // the same two-instruction probe (call HELPER; exit) and read the log here.
  bpf_insn insns[2] = {};
  insns[0].code = BPF_JMP | BPF_CALL;
  insns[0].imm = helperId;
  insns[1].code = BPF_JMP | BPF_EXIT;
  char log[4096] = {};
  LIBBPF_OPTS(bpf_prog_load_opts, opts, .log_level = 1, .log_size = sizeof(log), .log_buf = log);
  // As libbpf's probe: sock_addr programs need an attach type to load.
  if (progType == BPF_PROG_TYPE_CGROUP_SOCK_ADDR) opts.expected_attach_type = BPF_CGROUP_INET4_CONNECT;
  int fd = bpf_prog_load(static_cast<bpf_prog_type>(progType), nullptr, "GPL", insns, 2, &opts);
  if (fd >= 0) {
    ::close(fd);
    return 1;
  }
  if (std::strstr(log, "cannot use helper") != nullptr || std::strstr(log, "invalid func ") != nullptr ||
      std::strstr(log, "unknown func ") != nullptr)
    return 0;
  return 1;  // rejected for another reason (the arguments): the helper exists for this type
}

Result<std::string> readTextFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Error::fromErrno("open " + path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace aimesh
