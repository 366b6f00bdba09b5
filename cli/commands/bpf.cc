// meshctl bpf: the programs and maps pinned under the pin dir, read from the
// kernel (probe/pinned.h). Works without the agent.
#include <chrono>
#include <thread>

#include <fmt/format.h>

#include "commands/commands.h"
#include "format/table.h"
#include "util/unique_fd.h"

namespace aimesh {

std::string formatNanoseconds(double ns) {
  if (!(ns >= 0)) return "-";
  if (ns < 1000) return fmt::format("{:.0f}ns", ns);
  if (ns < 1e6) return fmt::format("{:.1f}µs", ns / 1e3);
  if (ns < 1e9) return fmt::format("{:.1f}ms", ns / 1e6);
  return fmt::format("{:.2f}s", ns / 1e9);
}

std::string formatBytes(uint64_t bytes) {
  if (bytes < 1024) return fmt::format("{}B", bytes);
  double v = static_cast<double>(bytes);
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  int u = -1;
  while (v >= 1024 && u < 3) {
    v /= 1024;
    ++u;
  }
  return fmt::format("{:.1f}{}", v, units[u]);
}

namespace {

std::string statsNote(const BpfView& view) {
  if (view.statsSeconds > 0)
    return fmt::format("run counts: during {} (BPF_ENABLE_STATS)", formatDuration(view.statsSeconds));
  if (view.statsSysctlOn) return "run counts: since load (kernel.bpf_stats_enabled=1)";
  return "run counts: 0 unless kernel.bpf_stats_enabled=1; --stats SECONDS measures a window without it";
}

}  // namespace

CommandOutput formatBpf(const PinnedObjects& objects, const BpfView& view, OutputFormat format) {
  CommandOutput result;
  for (const auto& p : objects.problems) result.err += "meshctl: " + p + "\n";

  if (format == OutputFormat::kJson) {
    nlohmann::json programs = nlohmann::json::array(), maps = nlohmann::json::array();
    for (const auto& p : objects.programs) {
      nlohmann::json avg = nullptr;
      if (p.runCount > 0) avg = static_cast<double>(p.runTimeNs) / static_cast<double>(p.runCount);
      programs.push_back({{"name", p.name},
                          {"pin", p.pin},
                          {"type", p.type},
                          {"attach_type", p.attachType},
                          {"attach_to", p.attachTo},
                          {"prog_id", p.progId},
                          {"link_id", p.linkId == 0 ? nlohmann::json(nullptr) : nlohmann::json(p.linkId)},
                          {"run_count", p.runCount},
                          {"run_time_ns", p.runTimeNs},
                          {"avg_run_ns", avg}});
    }
    for (const auto& m : objects.maps) {
      maps.push_back({{"name", m.name},
                      {"type", m.type},
                      {"id", m.id},
                      {"key_size", m.keySize},
                      {"value_size", m.valueSize},
                      {"max_entries", m.maxEntries},
                      {"used", m.used ? nlohmann::json(*m.used) : nlohmann::json(nullptr)},
                      {"memlock_bytes", m.memlockBytes ? nlohmann::json(*m.memlockBytes) : nlohmann::json(nullptr)}});
    }
    nlohmann::json stats = {{"window_seconds", view.statsSeconds > 0 ? nlohmann::json(view.statsSeconds) : nullptr},
                            {"sysctl_enabled", view.statsSysctlOn}};
    result.out = prettyJson({{"pin_dir", objects.pinDir},
                             {"run_stats", stats},
                             {"programs", programs},
                             {"maps", maps},
                             {"problems", objects.problems}});
    return result;
  }

  result.out = "pin dir: " + objects.pinDir + "\n" + statsNote(view) + "\n\nprograms:\n";
  Table programs({"NAME", "TYPE", "ATTACH", "TO", "PROG", "LINK", "RUNS", "AVG"});
  for (const auto& p : objects.programs) {
    std::string avg = p.runCount > 0 ? formatNanoseconds(static_cast<double>(p.runTimeNs) / p.runCount) : "-";
    programs.addRow({p.name, p.type, p.attachType, p.attachTo.empty() ? "-" : p.attachTo, std::to_string(p.progId),
                     p.linkId == 0 ? "-" : std::to_string(p.linkId), std::to_string(p.runCount), avg});
  }
  programs.setAlign(7, Table::Align::kRight);
  result.out += programs.render();

  result.out += "\nmaps:\n";
  Table maps({"NAME", "TYPE", "KEY", "VALUE", "MAX", "USED", "MEMORY"});
  for (const auto& m : objects.maps) {
    maps.addRow({m.name, m.type, std::to_string(m.keySize), std::to_string(m.valueSize), std::to_string(m.maxEntries),
                 m.used ? std::to_string(*m.used) : "n/a", m.memlockBytes ? formatBytes(*m.memlockBytes) : "-"});
  }
  maps.setAlign(5, Table::Align::kRight);
  maps.setAlign(6, Table::Align::kRight);
  result.out += maps.render();
  return result;
}

CommandOutput runBpf(const BpfOptions& options, OutputFormat format) {
  auto objects = readPinned(options.pinDir, true);
  if (!objects) return CommandOutput{kExitError, "", "meshctl: " + objects.error().message() + "\n"};
  BpfView view;
  view.statsSysctlOn = runStatsSysctlOn();
  if (options.statsSeconds > 0) {
    auto fd = enableRunStats();
    if (!fd) return CommandOutput{kExitError, "", "meshctl: " + fd.error().message() + "\n"};
    UniqueFd stats(*fd);  // statistics stay on while this is open
    std::vector<PinnedProgram> before = objects->programs;
    refreshRunStats(before);
    std::this_thread::sleep_for(std::chrono::duration<double>(options.statsSeconds));
    std::vector<PinnedProgram> after = before;
    refreshRunStats(after);
    objects->programs = runStatsDelta(before, after);
    view.statsSeconds = options.statsSeconds;
  }
  return formatBpf(*objects, view, format);
}

}  // namespace aimesh
