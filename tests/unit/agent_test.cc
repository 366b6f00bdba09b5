// Unit tests of the Agent with no kernel: assembled from a FakeMapWriter, a
// FakeDatapathReader and a scripted StateSource, it applies what its source
// yields, keeps the last good state when a state is rejected, follows the
// source in run(), and answers the API and /metrics from what the fake
// reader holds.
#include "agent.h"

#include <gtest/gtest.h>

#include <deque>
#include <thread>

#include "fixtures/fake_datapath_reader.h"
#include "fixtures/fake_map_writer.h"
#include "source/state_file.h"

namespace aimesh {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

// Hands out the updates a test queues: current() the last one queued,
// next() the oldest not handed out yet.
class ScriptedSource : public StateSource {
 public:
  void push(StateUpdate u) {
    std::lock_guard lk(mu_);
    queue_.push_back(u);
    last_ = std::move(u);
  }
  std::optional<StateUpdate> current() override {
    std::lock_guard lk(mu_);
    queue_.clear();
    return last_;
  }
  std::optional<StateUpdate> next(std::chrono::milliseconds timeout) override {
    {
      std::lock_guard lk(mu_);
      if (!queue_.empty()) {
        StateUpdate u = std::move(queue_.front());
        queue_.pop_front();
        return u;
      }
    }
    std::this_thread::sleep_for(std::min(timeout, std::chrono::milliseconds(10)));
    return std::nullopt;
  }
  std::string describe() const override { return "script"; }

 private:
  std::mutex mu_;
  std::deque<StateUpdate> queue_;
  std::optional<StateUpdate> last_;
};

StateUpdate parsed(const std::string& yaml) {
  ParseResult pr = parseStateText(yaml, "state.yaml");
  StateUpdate u;
  u.snapshot = std::move(pr.snapshot);
  for (auto& e : pr.errors) u.errors.push_back(e.toString());
  return u;
}

const char* kOne = R"(services:
  - name: llm
    namespace: ml
    model: m
    vips: [10.96.0.40]
    ports: [{port: 8000}]
    algorithm: least_conn
    endpoints:
      - {address: 10.77.0.2, port: 8000}
      - {address: 10.77.0.3, port: 8000, weight: 0}
)";

const char* kTwo = R"(services:
  - name: llm
    namespace: ml
    vips: [10.96.0.40]
    ports: [{port: 8000}]
    endpoints: [{address: 10.77.0.2, port: 8000}]
  - name: chat
    namespace: prod
    vips: [10.96.0.41]
    ports: [{port: 80}]
    endpoints: [{address: 10.77.0.9, port: 8080}]
)";

class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    AgentParts parts;
    auto w = std::make_unique<testing::FakeMapWriter>();
    w->checkEachOp = true;
    auto r = std::make_unique<testing::FakeDatapathReader>();
    auto s = std::make_unique<ScriptedSource>();
    writer = w.get();
    reader = r.get();
    source = s.get();
    parts.writer = std::move(w);
    parts.reader = std::move(r);
    parts.source = std::move(s);
    AgentOptions opts;
    opts.stateFile = "state.yaml";
    agent = Agent::assemble(opts, std::move(parts));
  }
  template <class T>
  T ask(const std::string& method, json extra = json::object()) {
    extra["method"] = method;
    auto v = view::parseView<T>(agent->handleApi(extra));
    EXPECT_TRUE(v) << method << ": " << v.error().message();
    return v ? *v : T{};
  }

  testing::FakeMapWriter* writer = nullptr;
  testing::FakeDatapathReader* reader = nullptr;
  ScriptedSource* source = nullptr;
  std::unique_ptr<Agent> agent;
};

TEST_F(AgentTest, NotReadyUntilTheSourceHasAState) {
  EXPECT_FALSE(agent->ready());
  EXPECT_FALSE(agent->reload());
  EXPECT_EQ(ask<view::Status>("status").services, 0u);
}

TEST_F(AgentTest, AppliesTheSourcesStateAndAnswersFromTheReader) {
  source->push(parsed(kOne));
  ASSERT_TRUE(agent->reload());
  EXPECT_TRUE(agent->ready());
  EXPECT_TRUE(writer->violations.empty());
  EXPECT_EQ(writer->state.frontends.size(), 1u);

  auto st = ask<view::Status>("status");
  EXPECT_TRUE(st.ready);
  EXPECT_EQ(st.services, 1u);
  EXPECT_EQ(st.endpoints, 2u);
  EXPECT_EQ(st.reconciles, 1u);
  EXPECT_TRUE(st.programs.empty()) << "no kernel, no programs";

  uint32_t sid = ask<view::ServiceList>("services").services.at(0).serviceId;
  reader->counters.services[sid] = ServiceCounters{5, 0, 1, 0};
  auto svc = ask<view::ServiceList>("services").services.at(0);
  EXPECT_EQ(svc.name, "llm");
  EXPECT_EQ(svc.connections, 5u);
  EXPECT_EQ(svc.refused, 1u);
  EXPECT_EQ(svc.activeEndpoints, 1u);

  auto eps = ask<view::EndpointList>("endpoints", {{"service", "llm"}}).endpoints;
  ASSERT_EQ(eps.size(), 2u);
  reader->backends[eps[0].backendId].active = 4;
  EXPECT_EQ(ask<view::EndpointList>("endpoints").endpoints.at(0).inFlight, 4);

  std::string metrics = agent->metricsText();
  EXPECT_NE(metrics.find("aimesh_service_connections_total{destination_service=\"llm\",destination_namespace=\"ml\",model=\"m\",port=\"8000\","
                         "protocol=\"TCP\"} 5\n"),
            std::string::npos);
  EXPECT_NE(metrics.find("destination_endpoint=\"10.77.0.2:8000\"} 4\n"), std::string::npos);
  EXPECT_NE(metrics.find("aimesh_agent_ready 1\n"), std::string::npos);
}

TEST_F(AgentTest, ARejectedStateKeepsTheLastGoodOne) {
  source->push(parsed(kOne));
  ASSERT_TRUE(agent->reload());
  auto before = writer->state;
  source->push(parsed("services:\n  - name: llm\n    ports: [{port: 70000}]\n"));
  EXPECT_FALSE(agent->reload());
  EXPECT_TRUE(agent->ready());
  EXPECT_EQ(writer->state.frontends.size(), before.frontends.size());
  auto st = ask<view::Status>("status");
  EXPECT_EQ(st.stateFileErrors, 1u);
  EXPECT_NE(st.lastError.find("state.yaml:3:"), std::string::npos) << st.lastError;
  EXPECT_EQ(ask<view::ServiceList>("services").services.size(), 1u);
  EXPECT_NE(agent->metricsText().find("aimesh_agent_state_file_valid 0\n"), std::string::npos);
}

TEST_F(AgentTest, ARefusingWriterIsAReconcileErrorAndKeepsTheIndex) {
  source->push(parsed(kOne));
  ASSERT_TRUE(agent->reload());
  writer->failAfter = static_cast<int>(writer->log.size());  // the next operation
  source->push(parsed(kTwo));
  EXPECT_FALSE(agent->reload());
  auto st = ask<view::Status>("status");
  EXPECT_EQ(st.reconcileErrors, 1u);
  EXPECT_NE(st.lastError.find("apply:"), std::string::npos) << st.lastError;
  EXPECT_EQ(st.services, 1u);
}

TEST_F(AgentTest, RunFollowsTheSourceUntilStopped) {
  std::atomic<bool> stop{false};
  std::thread t([&] { agent->run(stop); });
  source->push(parsed(kOne));
  source->push(parsed(kTwo));
  bool two = false;
  for (int i = 0; i < 200 && !two; ++i) {
    two = ask<view::ServiceList>("services").services.size() == 2;
    if (!two) std::this_thread::sleep_for(10ms);
  }
  stop = true;
  t.join();
  EXPECT_TRUE(two);
  EXPECT_EQ(ask<view::Status>("status").reconciles, 2u);
  auto chat = ask<view::EndpointList>("endpoints", {{"service", "chat"}, {"namespace", "prod"}}).endpoints;
  ASSERT_EQ(chat.size(), 1u);
  EXPECT_EQ(chat[0].port, 8080);
}

// Who calls which service: the kernel's (cgroup, service) entries through the
// reader, in the API and in /metrics alike. Without a cgroup to walk (no
// --cgroup here) a client is named by its id.
TEST_F(AgentTest, ClientsComeFromTheReaderInTheApiAndInMetrics) {
  source->push(parsed(kOne));
  ASSERT_TRUE(agent->reload());
  EXPECT_TRUE(ask<view::Clients>("clients").clients.empty());
  uint32_t sid = ask<view::ServiceList>("services").services.at(0).serviceId;
  ClientPair p;
  p.key.cgroup_id = 4242;
  p.key.service_id = sid;
  p.stats.connects = 3;
  p.stats.requests = 9;
  ClientPair stale = p;
  stale.key.service_id = sid + 100;  // no such service: left out
  reader->clientPairs = {p, stale};
  auto v = ask<view::Clients>("clients");
  EXPECT_EQ(v.pairs, 2u);
  EXPECT_EQ(v.topK, 20u);
  ASSERT_EQ(v.clients.size(), 1u);
  EXPECT_EQ(v.clients[0].client, "cgroup:4242");
  EXPECT_EQ(v.clients[0].cgroupId, 4242u);
  EXPECT_EQ(v.clients[0].service, "llm");
  EXPECT_EQ(v.clients[0].connections, 3u);
  EXPECT_EQ(v.clients[0].requests, 9u);
  std::string metrics = agent->metricsText();
  EXPECT_NE(metrics.find("aimesh_client_requests_total{client=\"cgroup:4242\",destination_service=\"llm\""), std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("aimesh_client_pairs 2\n"), std::string::npos);
}

TEST_F(AgentTest, ApiErrorsSayWhatIsWrong) {
  source->push(parsed(kOne));
  ASSERT_TRUE(agent->reload());
  EXPECT_EQ(agent->handleApi({{"method", "nope"}})["error"],
            "unknown method 'nope' (status, services, endpoints, latency, top, flows, policy, connections, clients, routes)");
  EXPECT_EQ(agent->handleApi({{"method", "latency"}, {"service", "x"}})["error"], "unknown service 'x'");
  reader->hasEventLog = false;
  EXPECT_EQ(agent->handleApi({{"method", "flows"}})["error"], "no event log");
  auto conns = ask<view::Connections>("connections");
  EXPECT_FALSE(conns.available);
  EXPECT_EQ(conns.reason, "not started");
  reader->failReads = true;
  EXPECT_EQ(agent->handleApi({{"method", "top"}})["error"], "read aimesh_be_tel: map gone");
  EXPECT_EQ(ask<view::ServiceList>("services").services.at(0).connections, 0u) << "counters unread read as zero";
}

TEST_F(AgentTest, FlowsAndLatencyComeFromTheReader) {
  source->push(parsed(kOne));
  ASSERT_TRUE(agent->reload());
  auto eps = ask<view::EndpointList>("endpoints").endpoints;
  FlowEvent e{.seq = 7};
  e.ev.type = AIMESH_EV_OPEN;
  e.ev.service_id = ask<view::ServiceList>("services").services.at(0).serviceId;
  e.ev.backend_id = eps.at(0).backendId;
  reader->events = {e};
  auto flows = ask<view::Flows>("flows");
  ASSERT_EQ(flows.events.size(), 1u);
  EXPECT_EQ(flows.events[0].service, "llm");
  EXPECT_EQ(flows.events[0].endpoint, "10.77.0.2:8000");
  EXPECT_EQ(flows.next, 8u);
  EXPECT_TRUE(ask<view::Flows>("flows", {{"since", 8}}).events.empty());

  BackendTelemetry& t = reader->backends[eps.at(0).backendId];
  t.hist[AIMESH_M_TTFT].record(50'000'000);
  auto lat = ask<view::Latency>("latency", {{"service", "llm"}});
  ASSERT_EQ(lat.endpoints.size(), 2u);
  EXPECT_EQ(lat.endpoints[0].metrics.at("ttft").count, 1u);
  EXPECT_EQ(lat.endpoints[1].metrics.at("ttft").count, 0u);  // no sample yet
}

// The kernel side and the lifecycle are opened with the agent's own flags.
TEST(AgentOptionsTest, DatapathAndLifecycleOptionsCarryTheAgentsFlags) {
  AgentOptions o;
  o.pinDir = "/sys/fs/bpf/x";
  o.cgroup = "/sys/fs/cgroup/unified/t";
  o.telemetry = false;
  o.tcInterfaces = {"veth0"};
  o.tuning.ewmaTauNs = 7;
  o.limits.services = 33;
  o.lifecycle.drainTimeout = std::chrono::milliseconds(1234);
  DatapathOptions d = o.datapathOptions();
  EXPECT_EQ(d.pinDir, o.pinDir);
  EXPECT_EQ(d.cgroupPath, o.cgroup);
  EXPECT_FALSE(d.telemetry);
  EXPECT_EQ(d.tcInterfaces, o.tcInterfaces);
  EXPECT_EQ(d.tuning.ewmaTauNs, 7u);
  EXPECT_EQ(d.limits.services, 33u);
  LifecycleOptions l = o.lifecycleOptions();
  EXPECT_EQ(l.cgroup, o.cgroup);
  EXPECT_FALSE(l.telemetry);
  EXPECT_EQ(l.drainTimeout, std::chrono::milliseconds(1234));
}

}  // namespace
}  // namespace aimesh
