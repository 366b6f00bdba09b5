// Thin probes of the running kernel for `meshctl doctor`: each one asks the
// kernel (or libbpf's probe API, which loads a tiny program or creates a
// tiny map and frees it at once) one question and returns the raw answer.
// Judging the answers is probe/doctor_checks.h. Nothing here attaches
// anything or changes a setting.
#pragma once

#include <string>

#include "util/result.h"

namespace aimesh {

// uname(2)'s release, e.g. "6.18.44-fc-v669".
std::string kernelRelease();
// Loads vmlinux BTF with libbpf (btf__load_vmlinux_btf) and returns its
// number of types.
Result<int> loadVmlinuxBtf();
// libbpf_probe_bpf_{prog_type,map_type,helper}: 1 supported, 0 not, < 0
// (a negative errno) when the probe could not run. libbpf's own messages
// are silenced meanwhile.
int probeProgramType(int progType);
int probeMapType(int mapType);
int probeHelper(int progType, int helperId);
// A whole small text file (/proc/self/status, fdinfo).
Result<std::string> readTextFile(const std::string& path);

}  // namespace aimesh
