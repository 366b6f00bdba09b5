// meshctl commands. Each command is split in two so tests need no agent:
//   format*(): the agent's JSON response → text and an exit code (pure); each
//              parses the response into its type from view/views.h and reads
//              the typed fields (commands/view_cells.h);
//   run*():    asks the agent through an AgentCall, then calls format*().
// main.cc only parses flags and dispatches. Table rendering lives in
// format/table.h; the socket protocol in client/api_client.h.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "probe/doctor_checks.h"
#include "probe/pinned.h"
#include "util/result.h"

namespace aimesh {

// Exit codes (documented in docs/cli.md).
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;             // agent error, unknown service, bad response
inline constexpr int kExitAgentUnreachable = 2;  // agent not running / not answering

enum class OutputFormat { kTable, kJson };

// What a command prints: `out` goes to stdout, `err` to stderr.
struct CommandOutput {
  int exitCode = kExitOk;
  std::string out;
  std::string err;
};

// "table" or "json".
Result<OutputFormat> parseOutputFormat(const std::string& name);

struct EndpointsFilter {
  std::string service;  // empty: every service
  std::string ns;       // empty: every namespace
};

// ---- pure formatting ---------------------------------------------------------
// Each takes the agent's response; {"error": ...} or a response of the wrong
// shape (one that does not parse into its view) gives kExitError and a
// message on `err`.

// status as "key: value" lines, then the attached programs.
CommandOutput formatStatus(const nlohmann::json& response, OutputFormat format);
// services table; `ns` non-empty keeps only that namespace.
CommandOutput formatServices(const nlohmann::json& response, const std::string& ns,
                             OutputFormat format);
// endpoints table. `services` is the agent's services response, used to tell an
// unknown service (kExitError) from one that has no endpoints (kExitOk); pass
// a null json when it was not fetched.
CommandOutput formatEndpoints(const nlohmann::json& response, const nlohmann::json& services,
                              const EndpointsFilter& filter, OutputFormat format);
// meshctl's own version plus the agent's; `agentStatus` is the agent's status
// response or the error reaching it, nullptr for --client (no agent call).
// Not reaching the agent is reported on `err` but is not a failure here:
// the client version was printed.
CommandOutput formatVersion(const Result<nlohmann::json>* agentStatus, OutputFormat format);

// The message and exit code for a failure to reach the agent.
CommandOutput agentUnreachable(const Error& err);

// ---- commands ----------------------------------------------------------------
using AgentCall = std::function<Result<nlohmann::json>(const nlohmann::json& request)>;

// An AgentCall that talks to the agent at `socketPath` (callAgent()).
AgentCall agentAt(std::string socketPath, std::chrono::milliseconds timeout);

CommandOutput runStatus(const AgentCall& call, OutputFormat format);
CommandOutput runServices(const AgentCall& call, const std::string& ns, OutputFormat format);
// policy table: per service port, enforced or open, allowed cgroups, denied
// calls; `service` non-empty keeps only that service.
CommandOutput formatPolicy(const nlohmann::json& response, const std::string& service, OutputFormat format);
CommandOutput runPolicy(const AgentCall& call, const std::string& service, OutputFormat format);
// routes table: per split port and backend service, configured and effective
// weight, configured and observed share, connections, the canary guard; then
// the guard's recent transitions, and the Kubernetes mesh routes. runRoutes()
// asks the agent for what `service` (name or ns/name) names: the split of
// that name and the mesh routes whose parent it is (the agent decides, as
// for every filtered method); formatRoutes() shows the answer and says when
// `service` found nothing.
CommandOutput formatRoutes(const nlohmann::json& response, const std::string& service, OutputFormat format);
CommandOutput runRoutes(const AgentCall& call, const std::string& service, OutputFormat format);
CommandOutput runEndpoints(const AgentCall& call, const EndpointsFilter& filter,
                           OutputFormat format);
// `call` nullptr: client version only.
CommandOutput runVersion(const AgentCall* call, OutputFormat format);

// ---- connections: what is open now to each endpoint ------------------------------

struct ConnectionsQuery {
  std::string service;  // empty: every service
  std::string ns;       // empty: every namespace
  bool each = false;    // table: list every connection under its endpoint (--each)
};
// One row per endpoint, in the agent's order: SERVICE (ns/name:port) ENDPOINT
// STATE ("(ejected)" appended) OPEN IDLE BUSY OLDEST REQ/CONN CLOSED (the
// non-zero reasons aimesh closed connections for, "rebalanced 4, max_age 1").
// With query.each, under each endpoint row an indented table of its
// connections, oldest first: CLIENT PROTO AGE REQUESTS STATE ("idle 0.4s").
// json: the agent's response as is. {"available": false} (the kernel cannot
// iterate sockets) gives kExitError with the agent's reason on `err`; no
// endpoints is a note on `err` and kExitOk.
CommandOutput formatConnections(const nlohmann::json& response, const ConnectionsQuery& query,
                                OutputFormat format);
// Sends {"method":"connections","service":...,"namespace":...} (empty strings
// for "every"); the agent answers an unknown service with {"error": ...}.
CommandOutput runConnections(const AgentCall& call, const ConnectionsQuery& query,
                             OutputFormat format);

// ---- latency, top, flows: the kernel's telemetry ---------------------------------

struct LatencyQuery {
  std::string service;  // required
  std::string ns;       // empty: whichever namespace the agent finds it in
};

// At most this many bar rows per histogram; adjacent buckets are merged.
inline constexpr std::size_t kLatencyMaxRows = 12;
// Per endpoint: a line naming it, then for each metric with samples a header
// ("connect  n=120  p50=1.2ms p90=2.0ms p99=3.1ms") and bars over its
// non-empty buckets (format/bars.h). json: the agent's response as is.
CommandOutput formatLatency(const nlohmann::json& response, const LatencyQuery& query,
                            OutputFormat format);
CommandOutput runLatency(const AgentCall& call, const LatencyQuery& query, OutputFormat format);

// How the polling commands (top, flows -f) wait and learn they should stop.
// Injected so tests run without a clock or signals.
struct PollLoop {
  std::function<bool()> stopped;             // true once the user asked to stop
  std::function<void(double seconds)> sleep;  // may return early once stopped
};
// The real clock, stopped by SIGINT: installs a handler (first Ctrl-C stops
// the loop, a second one exits the process at once with status 0).
PollLoop sigintPollLoop();

struct TopOptions {
  double intervalSeconds = 1.0;
  int iterations = 0;        // frames to draw; 0: until stopped
  bool clearScreen = false;  // stdout is a terminal: redraw each frame in place
  bool clients = false;      // --clients: who calls which service (method "clients")
};
// Requests per second of `endpoint` (an entry of current["endpoints"]) since
// the same endpoint in `previous`: the requests delta over the time_seconds
// delta. nullopt when there is no previous poll, the endpoint is new, time did
// not advance, or the counter went backwards (the agent restarted).
std::optional<double> requestRate(const nlohmann::json& previous, const nlohmann::json& current,
                                  const nlohmann::json& endpoint);
// One frame of `meshctl top` (pure): a table SERVICE ENDPOINT ACTIVE REQ/S
// TTFT_P50 TTFT_P99 GAP_P50 ERRORS, sorted by namespace/service then
// endpoint. `previous` is the last poll's response, null for the first frame
// (REQ/S "-"). json: `current` on one line. An error response fails as in
// checkResponse().
CommandOutput formatTopFrame(const nlohmann::json& previous, const nlohmann::json& current,
                             OutputFormat format);
// One frame of `meshctl top --clients` (pure), from the agent's "clients"
// answer: a table CLIENT SERVICE (namespace/name) CONN/S REQ/S CONNECTIONS
// REQUESTS REFUSED DENIED. CONNECTIONS counts TCP connects plus UDP datagrams;
// CONN/S and REQ/S are their deltas (and the requests') over the time_seconds
// delta since the same (client, cgroup_id, service, namespace) in `previous`,
// "-" when there is no previous poll (null), the pair is new, time did not
// advance or the counter went backwards. Sorted by namespace/service, then by
// connections + datagrams + requests (most first), the "other" row last in
// its service. No rows: "No clients yet.". json: `current` on one line. An
// error response fails as in checkResponse().
CommandOutput formatClientsFrame(const nlohmann::json& previous, const nlohmann::json& current,
                                 OutputFormat format);
// Polls the agent every options.intervalSeconds (method "top", or "clients"
// with options.clients: frames from formatClientsFrame()) and writes frames to `out`:
// each preceded by "\x1b[H\x1b[2J" with clearScreen, else separated by a blank
// line (json: one line per poll). Returns the exit code: kExitOk when stopped
// or after `iterations` frames; the failure's code (message on `err`) when the
// agent cannot be reached or answers with an error.
int runTop(const AgentCall& call, const TopOptions& options, OutputFormat format,
           std::ostream& out, std::ostream& err, const PollLoop& loop);

// Turns the agent's monotonic event times into wall-clock time of day.
struct FlowClock {
  double offsetSeconds = 0;  // CLOCK_REALTIME - CLOCK_MONOTONIC
  bool utc = false;          // UTC instead of the local time zone (tests)
};
// The offset read now from this host's clocks (the agent shares them).
FlowClock systemFlowClock();

struct FlowsOptions {
  bool follow = false;
  double intervalSeconds = 1.0;
};
// One event as a line, e.g.
//   12:00:01.123 open   ml/llama-chat -> 10.77.0.2:8000 connect=400µs
//   12:00:05.001 close  ml/llama-chat -> 10.77.0.2:8000 duration=3.9s requests=2
//                sent=1.2KiB received=48.0KiB retransmits=0   (one line)
// refused/timeout show after=<time to failure>; no_backend names no endpoint.
std::string formatFlowEvent(const nlohmann::json& event, const FlowClock& clock);
// The events of one flows response: a line each (json: JSON Lines, one event
// per line). "dropped" > 0 adds a note on `err`.
CommandOutput formatFlows(const nlohmann::json& response, const FlowClock& clock,
                          OutputFormat format);
// Asks for events since 0 and prints them, asking again at once with `since`
// = the previous response's "next" while responses bring events (the agent
// pages its answers); without follow it stops at the first empty response (or
// after kFlowsMaxPages), with follow it waits intervalSeconds after an empty
// response and goes on until stopped.
inline constexpr int kFlowsMaxPages = 1000;
int runFlows(const AgentCall& call, const FlowsOptions& options, OutputFormat format,
             const FlowClock& clock, std::ostream& out, std::ostream& err, const PollLoop& loop);

// ---- doctor, bpf: read the kernel, no agent needed -------------------------------

struct DoctorOptions {
  std::string bpffs = "/sys/fs/bpf";  // where bpffs should be mounted
  std::string pinDir;                 // empty: the running agent's, else kDefaultPinDir
  std::string socketPath;             // the agent socket `call` talks to (for messages)
};
// One line per check under its group ("  [pass] kernel version  6.18.44 (need
// >= 5.18)"), a "fix: ..." line under each warning and failure, and a summary
// line. json: {"ok", "summary": {pass, warn, fail}, "checks": [{group, name,
// status, detail, hint}]}. Exit kExitError when a check failed.
CommandOutput formatDoctor(const std::vector<CheckResult>& checks, OutputFormat format);
// Probes the kernel and /proc, asks the agent for its status (through `call`)
// and returns every check. Loads only libbpf's probe programs; attaches nothing.
std::vector<CheckResult> collectDoctorChecks(const AgentCall& call, const DoctorOptions& options);
CommandOutput runDoctor(const AgentCall& call, const DoctorOptions& options, OutputFormat format);

struct BpfOptions {
  std::string pinDir = kDefaultPinDir;
  double statsSeconds = 0;  // > 0: turn on run-time stats this long and show the delta
};
struct BpfView {
  double statsSeconds = 0;     // the counters are a window of this many seconds (0: totals)
  bool statsSysctlOn = false;  // kernel.bpf_stats_enabled (totals count only then)
};
// "pin dir:" and a line on what the run counts mean, then a programs table
// (NAME TYPE ATTACH TO PROG LINK RUNS AVG) and a maps table (NAME TYPE KEY
// VALUE MAX USED MEMORY; USED "n/a" when not countable). Problems with single
// pins go to err. json: {pin_dir, run_stats, programs, maps, problems}.
CommandOutput formatBpf(const PinnedObjects& objects, const BpfView& view, OutputFormat format);
// readPinned(), with --stats: BPF_ENABLE_STATS for that long, then the delta.
CommandOutput runBpf(const BpfOptions& options, OutputFormat format);
// 850 → "850ns", 1234 → "1.2µs", 2.5e6 → "2.5ms".
std::string formatNanoseconds(double ns);
// 512 → "512B", 4096 → "4.0KiB", 1676288 → "1.6MiB".
std::string formatBytes(uint64_t bytes);

// ---- helpers shared by the commands (exposed for tests) ------------------------
// Checks an agent response before formatting: {"error": text}, a response
// that is not an object or one without `requiredKey` fills `failure`
// (kExitError, message on err) and returns false.
bool checkResponse(const nlohmann::json& response, const char* requiredKey,
                   CommandOutput& failure);
// -o json output: indented, one trailing newline.
std::string prettyJson(const nlohmann::json& value);
// 12.5 → "12.5s", 3725 → "1h2m5s", 200000 → "2d7h33m".
std::string formatDuration(double seconds);

}  // namespace aimesh
