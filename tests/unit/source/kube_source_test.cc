// KubeSource against the fake API server (tests/fixtures/fake_apiserver.h):
// list then watch, changes, and every fault the fake can inject, each ending
// in the same state as the API server's with nothing lost.
#include "source/kube_source.h"

#include <gtest/gtest.h>

#include <fstream>
#include <thread>

#include "fixtures/fake_apiserver.h"

namespace aimesh {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
using testing::FakeApiServer;
using testing::Resource;

json service(const std::string& ns, const std::string& name, const std::string& ip, int port = 80,
             json labels = json::object(), json annotations = json::object()) {
  return json{{"metadata", {{"name", name}, {"namespace", ns}, {"labels", labels}, {"annotations", annotations}}},
              {"spec",
               {{"type", "ClusterIP"},
                {"clusterIP", ip},
                {"clusterIPs", {ip}},
                {"ports", {{{"name", "http"}, {"port", port}, {"protocol", "TCP"}, {"targetPort", 8000}}}}}}};
}

json slice(const std::string& ns, const std::string& name, const std::string& svc,
           const std::vector<std::string>& addrs, bool ready = true, bool terminating = false) {
  json eps = json::array();
  for (auto& a : addrs)
    eps.push_back({{"addresses", {a}}, {"conditions", {{"ready", ready}, {"serving", ready}, {"terminating", terminating}}}});
  return json{{"metadata", {{"name", name}, {"namespace", ns}, {"labels", {{"kubernetes.io/service-name", svc}}}}},
              {"addressType", "IPv4"},
              {"ports", {{{"name", "http"}, {"port", 8000}, {"protocol", "TCP"}}}},
              {"endpoints", eps}};
}

// "ns/name" → sorted "addr:port/state" of its endpoints, for compact checks.
std::map<std::string, std::vector<std::string>> summary(const Snapshot& s) {
  std::map<std::string, std::vector<std::string>> out;
  for (auto& svc : s.services) {
    auto& v = out[svc.key()];
    for (auto& e : svc.endpoints)
      v.push_back(e.address.toString() + ":" + std::to_string(e.port) + "/" + toString(e.state));
  }
  return out;
}

FakeApiServer::Options fakeOptions(bool tls, std::string token = "") {
  FakeApiServer::Options o;
  o.tls = tls;
  o.token = std::move(token);
  return o;
}

struct Harness {
  explicit Harness(FakeApiServer::Options o = fakeOptions(false), std::string selector = "") : fake(o) {
    KubeConfig cfg;
    cfg.server = fake.url();
    cfg.caFile = fake.caFile();
    cfg.token = o.token;
    config = cfg;
    this->selector = std::move(selector);
  }
  void start(KubeClient::Options copts = {}, std::string nodeName = "") {
    KubeSourceOptions so;
    so.serviceSelector = selector;
    so.nodeName = std::move(nodeName);
    so.backoffMin = 20ms;
    so.backoffMax = 200ms;
    so.watchTimeout = 300s;
    auto s = KubeSource::start(KubeClient(config, copts), so);
    ASSERT_TRUE(s) << s.error().message();
    source = std::move(s.value());
  }
  // Takes snapshots until `want` holds (the last one is kept in `last`).
  bool waitFor(const std::function<bool(const std::map<std::string, std::vector<std::string>>&)>& want,
               std::chrono::milliseconds timeout = 5s) {
    auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      if (auto br = source->waitForChange(50ms)) {
        last = summary(br->snapshot);
        lastSnapshot = br->snapshot;
      }
      if (source->synced() && want(last)) return true;
    }
    return false;
  }
  bool waitForWatches() {
    return fake.waitForWatches(Resource::kServices, 1, 5s) && fake.waitForWatches(Resource::kEndpointSlices, 1, 5s);
  }
  const KubeResourceStats& st(KubeResource r) {
    stats = source->stats();
    return stats.resources[static_cast<int>(r)];
  }

  FakeApiServer fake;
  KubeConfig config;
  std::string selector;
  std::unique_ptr<KubeSource> source;
  std::map<std::string, std::vector<std::string>> last;
  Snapshot lastSnapshot;
  KubeSourceStats stats;
};

using Summary = std::map<std::string, std::vector<std::string>>;

TEST(KubeSource, ListsBothResourcesThenHandsOutTheState) {
  Harness h;
  h.fake.upsert(Resource::kServices, service("ml", "llama", "10.96.0.20"));
  h.fake.upsert(Resource::kEndpointSlices, slice("ml", "llama-abc", "llama", {"10.0.1.5", "10.0.2.7"}));
  h.start();
  ASSERT_TRUE(h.waitFor([](const Summary& s) { return !s.empty(); }));
  EXPECT_EQ(h.last, (Summary{{"ml/llama", {"10.0.1.5:8000/active", "10.0.2.7:8000/active"}}}));
  EXPECT_EQ(h.st(KubeResource::kServices).lists, 1u);
  EXPECT_EQ(h.st(KubeResource::kEndpointSlices).lists, 1u);
  EXPECT_TRUE(h.st(KubeResource::kServices).synced);
  EXPECT_EQ(h.st(KubeResource::kServices).relists, 0u);
  // Nothing changed: nothing more is handed out.
  EXPECT_FALSE(h.source->waitForChange(200ms));
}

// The fixtures shaped like real API responses (tests/fixtures/kube/), served
// by the fake and taken through list and watch, give exactly the snapshot
// the mapper makes of them directly.
json fixtureItems(const std::string& name) {
  std::ifstream in(AIMESH_SOURCE_DIR "/tests/fixtures/kube/" + name);
  json j = json::parse(in);
  return j["items"];
}

TEST(KubeSource, RealisticFixturesThroughListAndWatchGiveTheMappersSnapshot) {
  json services = fixtureItems("services.json"), slices = fixtureItems("endpointslices.json");
  std::map<std::string, kube::ServiceObj> svcObjs;
  std::map<std::string, kube::EndpointSliceObj> sliceObjs;
  for (auto& i : services) {
    auto d = kube::decodeService(i);
    ASSERT_TRUE(d) << d.error().message();
    svcObjs[d->meta.key()] = *d;
  }
  for (auto& i : slices) {
    auto d = kube::decodeEndpointSlice(i);
    ASSERT_TRUE(d) << d.error().message();
    sliceObjs[d->meta.key()] = *d;
  }
  Snapshot want = kube::buildSnapshot(svcObjs, sliceObjs).snapshot;
  ASSERT_FALSE(want.services.empty());

  Harness h;
  // Half of each arrives in the list, the other half through the watch.
  for (size_t i = 0; i < services.size() / 2; ++i) h.fake.upsert(Resource::kServices, services[i]);
  for (size_t i = 0; i < slices.size() / 2; ++i) h.fake.upsert(Resource::kEndpointSlices, slices[i]);
  h.start();
  ASSERT_TRUE(h.waitFor([](const Summary&) { return true; }));
  ASSERT_TRUE(h.waitForWatches());
  for (size_t i = services.size() / 2; i < services.size(); ++i) h.fake.upsert(Resource::kServices, services[i]);
  for (size_t i = slices.size() / 2; i < slices.size(); ++i) h.fake.upsert(Resource::kEndpointSlices, slices[i]);
  Summary expected = summary(want);
  EXPECT_TRUE(h.waitFor([&](const Summary& s) { return s == expected; }))
      << "expected " << ::testing::PrintToString(expected) << "\ngot " << ::testing::PrintToString(h.last);
  EXPECT_TRUE(h.lastSnapshot == want);  // VIPs, ports, algorithms, models too
}

TEST(KubeSource, HandsOutNothingUntilBothResourcesAreListed) {
  Harness h;
  h.fake.upsert(Resource::kServices, service("ml", "llama", "10.96.0.20"));
  h.fake.failNext(Resource::kEndpointSlices, 500, 3);
  h.start();
  // Services are listed at once, slices only after three failures and back-offs.
  EXPECT_FALSE(h.source->waitForChange(10ms));
  EXPECT_FALSE(h.source->synced());
  ASSERT_TRUE(h.waitFor([](const Summary& s) { return s.count("ml/llama"); }));
  EXPECT_EQ(h.st(KubeResource::kEndpointSlices).errors, 3u);
  EXPECT_NE(h.stats.lastError.find("500"), std::string::npos) << h.stats.lastError;
}

TEST(KubeSource, AddsModifiesAndDeletesFromTheWatch) {
  Harness h;
  h.start();
  ASSERT_TRUE(h.waitFor([](const Summary& s) { return s.empty(); }));
  ASSERT_TRUE(h.waitForWatches());

  h.fake.upsert(Resource::kServices, service("ml", "llama", "10.96.0.20"));
  h.fake.upsert(Resource::kEndpointSlices, slice("ml", "llama-abc", "llama", {"10.0.1.5", "10.0.2.7"}));
  ASSERT_TRUE(h.waitFor([](const Summary& s) { return s.count("ml/llama") && s.at("ml/llama").size() == 2; }));

  // One endpoint goes away (terminating), then the slice changes again.
  h.fake.upsert(Resource::kEndpointSlices, slice("ml", "llama-abc", "llama", {"10.0.1.5"}));
  ASSERT_TRUE(h.waitFor([](const Summary& s) {
    return s.count("ml/llama") && s.at("ml/llama") == std::vector<std::string>{"10.0.1.5:8000/active"};
  }));
  json draining = slice("ml", "llama-abc", "llama", {"10.0.1.5"}, false, true);
  h.fake.upsert(Resource::kEndpointSlices, draining);
  ASSERT_TRUE(h.waitFor([](const Summary& s) {
    return s.count("ml/llama") && s.at("ml/llama") == std::vector<std::string>{"10.0.1.5:8000/draining"};
  }));

  h.fake.remove(Resource::kServices, "ml", "llama");
  ASSERT_TRUE(h.waitFor([](const Summary& s) { return s.empty(); }));
  auto& sv = h.st(KubeResource::kServices);
  EXPECT_EQ(sv.added, 1u);
  EXPECT_EQ(sv.deleted, 1u);
  auto& sl = h.st(KubeResource::kEndpointSlices);
  EXPECT_EQ(sl.added, 1u);
  EXPECT_EQ(sl.modified, 2u);
  EXPECT_EQ(sl.objects, 1u);  // the slice is still there; its Service is not
  EXPECT_EQ(sv.relists + sl.relists, 0u);
}

TEST(KubeSource, AStreamCutMidEventResumesFromTheLastEventWithoutARelist) {
  Harness h;
  h.fake.upsert(Resource::kServices, service("ml", "llama", "10.96.0.20"));
  h.fake.upsert(Resource::kEndpointSlices, slice("ml", "llama-abc", "llama", {"10.0.1.5"}));
  h.start();
  ASSERT_TRUE(h.waitFor([](const Summary& s) { return s.count("ml/llama"); }));
  ASSERT_TRUE(h.waitForWatches());

  h.fake.dropWatchesMidEvent(Resource::kEndpointSlices);
  h.fake.upsert(Resource::kEndpointSlices, slice("ml", "llama-abc", "llama", {"10.0.1.5", "10.0.3.3"}));
  h.fake.upsert(Resource::kEndpointSlices, slice("ml", "llama-abc", "llama", {"10.0.1.5", "10.0.3.3", "10.0.4.4"}));
  ASSERT_TRUE(h.waitFor([](const Summary& s) { return s.count("ml/llama") && s.at("ml/llama").size() == 3; }));
  auto& sl = h.st(KubeResource::kEndpointSlices);
  EXPECT_EQ(sl.relists, 0u);          // resumed from the resourceVersion, not listed again
  EXPECT_GE(sl.watchRestarts, 1u);
  EXPECT_GE(sl.errors, 1u);           // the cut stream
  EXPECT_EQ(sl.modified, 2u);         // each change applied once: the cut one was replayed whole
}

TEST(KubeSource, AnExpiredResourceVersionLeadsToAFreshList) {
  Harness h;
  h.fake.upsert(Resource::kServices, service("ml", "llama", "10.96.0.20"));
  h.fake.upsert(Resource::kEndpointSlices, slice("ml", "llama-abc", "llama", {"10.0.1.5"}));
  h.start();
  ASSERT_TRUE(h.waitFor([](const Summary& s) { return s.count("ml/llama"); }));
  ASSERT_TRUE(h.waitForWatches());

  // The watch is cut before it sees the next two changes, stays away for two
  // failed attempts, and in the meantime the history is compacted: its
  // resume gets the 410 ERROR event and it must list again.
  h.fake.failNext(Resource::kEndpointSlices, 500, 2);
  h.fake.dropWatchesMidEvent(Resource::kEndpointSlices);
  h.fake.upsert(Resource::kEndpointSlices, slice("ml", "llama-abc", "llama", {"10.0.1.5", "10.0.3.3"}));
  h.fake.upsert(Resource::kEndpointSlices, slice("ml", "llama-new", "llama", {"10.0.9.9"}));
  h.fake.remove(Resource::kEndpointSlices, "ml", "llama-abc");
  h.fake.compact();
  ASSERT_TRUE(h.waitFor([](const Summary& s) {
    return s.count("ml/llama") && s.at("ml/llama") == std::vector<std::string>{"10.0.9.9:8000/active"};
  }));
  auto& sl = h.st(KubeResource::kEndpointSlices);
  EXPECT_EQ(sl.relists, 1u);
  EXPECT_EQ(sl.lists, 2u);
  EXPECT_EQ(sl.objects, 1u);  // the relist replaced the store: llama-abc is gone
}

TEST(KubeSource, AnHttp410OnTheWatchLeadsToAFreshList) {
  Harness h;
  h.fake.upsert(Resource::kServices, service("ml", "llama", "10.96.0.20"));
  h.start();
  ASSERT_TRUE(h.waitFor([](const Summary& s) { return s.count("ml/llama"); }));
  ASSERT_TRUE(h.waitForWatches());
  h.fake.failNext(Resource::kServices, 410, 1);
  h.fake.closeWatches(Resource::kServices);
  h.fake.upsert(Resource::kServices, service("ml", "mistral", "10.96.0.21"));
  ASSERT_TRUE(h.waitFor([](const Summary& s) { return s.count("ml/mistral"); }));
  auto& sv = h.st(KubeResource::kServices);
  EXPECT_EQ(sv.relists, 1u);
  EXPECT_EQ(sv.errors, 0u);  // 410 is not an error: it says "list again"
}

TEST(KubeSource, ServerErrorsAndThrottlingAreRetriedWithBackOff) {
  Harness h;
  h.fake.upsert(Resource::kServices, service("ml", "llama", "10.96.0.20"));
  h.start();
  ASSERT_TRUE(h.waitFor([](const Summary& s) { return s.count("ml/llama"); }));
  ASSERT_TRUE(h.waitForWatches());
  h.fake.failNext(Resource::kServices, 500, 2);
  h.fake.closeWatches(Resource::kServices);
  h.fake.upsert(Resource::kServices, service("ml", "mistral", "10.96.0.21"));
  ASSERT_TRUE(h.waitFor([](const Summary& s) { return s.count("ml/mistral"); }));
  ASSERT_TRUE(h.fake.waitForWatches(Resource::kServices, 1, 5s));
  h.fake.failNext(Resource::kServices, 429, 1);
  h.fake.closeWatches(Resource::kServices);
  h.fake.remove(Resource::kServices, "ml", "llama");
  ASSERT_TRUE(h.waitFor([](const Summary& s) { return !s.count("ml/llama") && s.count("ml/mistral"); }));
  auto& sv = h.st(KubeResource::kServices);
  EXPECT_EQ(sv.errors, 3u);
  EXPECT_EQ(sv.relists, 0u);
  EXPECT_EQ(sv.lists, 1u);
}

TEST(KubeSource, FieldsOfTheWrongTypeAreErrorsNotACrash) {
  // A broken proxy or hostile server: resourceVersion a number, metadata a
  // string, an ERROR event whose code is a string. Each was an uncaught
  // nlohmann type_error that ended the source thread (and the agent).
  Harness h;
  h.fake.upsert(Resource::kServices, service("ml", "llama", "10.96.0.20"));
  h.fake.replyNext(Resource::kServices, 200, R"({"kind":"ServiceList","items":[],"metadata":{"resourceVersion":5}})");
  h.fake.replyNext(Resource::kEndpointSlices, 200, R"({"items":[],"metadata":"x"})");
  h.start();
  // Both lists had no usable resourceVersion: retried, then the real state.
  ASSERT_TRUE(h.waitFor([](const Summary& s) { return s.count("ml/llama"); }));
  ASSERT_TRUE(h.waitForWatches());
  h.fake.replyNext(Resource::kServices, 200, R"({"type":"ERROR","object":{"code":"410","message":7}})");
  h.fake.closeWatches(Resource::kServices);
  h.fake.upsert(Resource::kServices, service("ml", "mistral", "10.96.0.21"));
  ASSERT_TRUE(h.waitFor([](const Summary& s) { return s.count("ml/mistral"); }));
}

TEST(KubeSource, ASlowServerIsWaitedForAndOneSlowerThanTheTimeoutIsRetried) {
  Harness h;
  h.fake.upsert(Resource::kServices, service("ml", "llama", "10.96.0.20"));
  h.fake.setDelay(600ms);
  KubeClient::Options o;
  o.requestTimeout = 300ms;  // lists give up before the answer comes
  h.start(o);
  std::this_thread::sleep_for(1000ms);
  EXPECT_FALSE(h.source->synced());
  EXPECT_GE(h.st(KubeResource::kServices).errors, 1u);
  EXPECT_NE(h.stats.lastError.find("timed out"), std::string::npos) << h.stats.lastError;
  h.fake.setDelay(100ms);  // slow, but within the timeout
  ASSERT_TRUE(h.waitFor([](const Summary& s) { return s.count("ml/llama"); }, 10s));
}

TEST(KubeSource, SpeaksTlsWithABearerTokenAndReportsAWrongToken) {
  {
    Harness h(fakeOptions(true, "s3cret"));
    h.fake.upsert(Resource::kServices, service("ml", "llama", "10.96.0.20"));
    h.start();
    ASSERT_TRUE(h.waitFor([](const Summary& s) { return s.count("ml/llama"); }));
  }
  {
    Harness h(fakeOptions(true, "s3cret"));
    h.config.token = "wrong";
    h.start();
    for (int i = 0; i < 100 && h.st(KubeResource::kServices).errors == 0; ++i) std::this_thread::sleep_for(50ms);
    EXPECT_FALSE(h.source->synced());
    h.st(KubeResource::kServices);
    EXPECT_NE(h.stats.lastError.find("401"), std::string::npos) << h.stats.lastError;
  }
  {
    Harness h(fakeOptions(true));
    h.config.caFile.clear();  // the fake's self-signed certificate is not trusted
    h.start();
    // Poll: a TLS handshake that fails can take a while on a loaded machine
    // (or under ASan).
    for (int i = 0; i < 100 && h.st(KubeResource::kServices).errors == 0; ++i) std::this_thread::sleep_for(50ms);
    EXPECT_FALSE(h.source->synced());
    EXPECT_GE(h.st(KubeResource::kServices).errors, 1u);
  }
}

TEST(KubeSource, TheSelectorPicksTheServicesAndFollowsLabelChanges) {
  Harness h(fakeOptions(false), "aimesh.io/mesh=on");
  json on = {{"aimesh.io/mesh", "on"}};
  h.fake.upsert(Resource::kServices, service("ml", "llama", "10.96.0.20", 80, on));
  h.fake.upsert(Resource::kServices, service("ml", "other", "10.96.0.30"));
  h.start();
  ASSERT_TRUE(h.waitFor([](const Summary& s) { return s.count("ml/llama"); }));
  EXPECT_FALSE(h.last.count("ml/other"));
  ASSERT_TRUE(h.waitForWatches());
  h.fake.upsert(Resource::kServices, service("ml", "other", "10.96.0.30", 80, on));
  ASSERT_TRUE(h.waitFor([](const Summary& s) { return s.count("ml/other"); }));
  h.fake.upsert(Resource::kServices, service("ml", "llama", "10.96.0.20"));  // label removed
  ASSERT_TRUE(h.waitFor([](const Summary& s) { return !s.count("ml/llama"); }));
  bool sawSelector = false;
  for (auto& l : h.fake.requestLog()) sawSelector |= l.find("labelSelector=aimesh.io%2Fmesh%3Don") != std::string::npos;
  EXPECT_TRUE(sawSelector);
}

TEST(KubeSource, BookmarksAreCountedAndMoveTheResumePointOn) {
  Harness h;
  h.start();
  ASSERT_TRUE(h.waitFor([](const Summary& s) { return s.empty(); }));
  ASSERT_TRUE(h.waitForWatches());
  h.fake.upsert(Resource::kEndpointSlices, slice("ml", "x", "nothing", {"10.0.0.1"}));  // moves the global rv
  h.fake.bookmark(Resource::kServices);
  auto end = std::chrono::steady_clock::now() + 5s;
  while (h.st(KubeResource::kServices).bookmarks == 0 && std::chrono::steady_clock::now() < end)
    std::this_thread::sleep_for(10ms);
  ASSERT_EQ(h.st(KubeResource::kServices).bookmarks, 1u);
  std::string rv = h.fake.resourceVersion();
  int watches = h.fake.watchRequests(Resource::kServices);
  h.fake.closeWatches(Resource::kServices);
  end = std::chrono::steady_clock::now() + 5s;
  while (h.fake.watchRequests(Resource::kServices) == watches && std::chrono::steady_clock::now() < end)
    std::this_thread::sleep_for(10ms);
  auto log = h.fake.requestLog();
  std::string lastWatch;
  for (auto& l : log)
    if (l.find("/api/v1/services?watch") != std::string::npos) lastWatch = l;
  EXPECT_NE(lastWatch.find("resourceVersion=" + rv + "&"), std::string::npos) << lastWatch;
  EXPECT_NE(lastWatch.find("allowWatchBookmarks=true"), std::string::npos) << lastWatch;
}

TEST(KubeSource, ToldWhetherItsDaemonSetIsGoneOrBeingDeleted) {
  Harness h;
  h.start();
  std::string err;
  h.fake.setDaemonSet("kube-system", "aimesh", true);
  EXPECT_EQ(h.source->daemonSet("kube-system", "aimesh", &err), KubeSource::DaemonSetState::kPresent) << err;
  h.fake.setDaemonSet("kube-system", "aimesh", true, true);
  EXPECT_EQ(h.source->daemonSet("kube-system", "aimesh", &err), KubeSource::DaemonSetState::kDeleting) << err;
  h.fake.setDaemonSet("kube-system", "aimesh", false);
  EXPECT_EQ(h.source->daemonSet("kube-system", "aimesh", &err), KubeSource::DaemonSetState::kGone) << err;
}

json pod(const std::string& name, const std::string& node, const std::string& app, const std::string& phase = "Running") {
  return json{{"metadata", {{"name", name}, {"namespace", "ml"}, {"labels", {{"app", app}}}}},
              {"spec", {{"nodeName", node}}},
              {"status", {{"phase", phase}}}};
}

std::vector<std::string> allowedPods(const Snapshot& s) {
  std::vector<std::string> out;
  for (auto& svc : s.services)
    if (svc.policy)
      for (auto& p : svc.policy->allowPods) out.push_back(svc.key() + " " + p.name);
  return out;
}

TEST(KubeSource, WithANodeNameWatchesThatNodesPodsAndWaitsForThemBeforeHandingOut) {
  Harness h;
  h.fake.upsert(Resource::kServices,
                service("ml", "llama", "10.96.0.20", 80, json::object(), {{"aimesh.io/allow-pods", "app=client"}}));
  h.fake.upsert(Resource::kPods, pod("client-0", "node-1", "client"));
  h.fake.upsert(Resource::kPods, pod("client-elsewhere", "node-2", "client"));
  h.fake.failNext(Resource::kPods, 500, 2);  // the pods' first lists fail: nothing may be handed out yet
  h.start({}, "node-1");
  ASSERT_TRUE(h.waitFor([](const Summary& s) { return !s.empty(); }));
  EXPECT_GE(h.fake.listRequests(Resource::kPods), 3);
  EXPECT_EQ(allowedPods(h.lastSnapshot), (std::vector<std::string>{"ml/llama ml/client-0"}));
  EXPECT_TRUE(h.st(KubeResource::kPods).synced);
  EXPECT_EQ(h.st(KubeResource::kPods).objects, 1u);  // only this node's
  EXPECT_GE(h.st(KubeResource::kPods).errors, 2u);
  bool fieldSelector = false;
  for (auto& line : h.fake.requestLog())
    if (line.find("/api/v1/pods?") != std::string::npos)
      fieldSelector |= line.find("fieldSelector=spec.nodeName%3Dnode-1") != std::string::npos;
  EXPECT_TRUE(fieldSelector);

  // Through the watch: a pod starts matching, one finishes, one is deleted.
  ASSERT_TRUE(h.fake.waitForWatches(Resource::kPods, 1, 5s));
  h.fake.upsert(Resource::kPods, pod("client-1", "node-1", "client"));
  h.fake.upsert(Resource::kPods, pod("web-0", "node-1", "web"));
  ASSERT_TRUE(h.waitFor([&](const Summary&) { return allowedPods(h.lastSnapshot).size() == 2; }));
  EXPECT_EQ(allowedPods(h.lastSnapshot),
            (std::vector<std::string>{"ml/llama ml/client-0", "ml/llama ml/client-1"}));
  h.fake.upsert(Resource::kPods, pod("client-0", "node-1", "client", "Succeeded"));
  h.fake.upsert(Resource::kPods, pod("web-0", "node-1", "client"));  // relabelled into the selector
  h.fake.remove(Resource::kPods, "ml", "client-1");
  ASSERT_TRUE(h.waitFor([&](const Summary&) {
    return allowedPods(h.lastSnapshot) == std::vector<std::string>{"ml/llama ml/web-0"};
  })) << ::testing::PrintToString(allowedPods(h.lastSnapshot));
}

TEST(KubeSource, PodsForbiddenDoNotHoldTheServicesBackAndArePickedUpOnceAllowed) {
  Harness h;
  h.fake.upsert(Resource::kServices,
                service("ml", "llama", "10.96.0.20", 80, json::object(), {{"aimesh.io/allow-pods", "app=client"}}));
  h.fake.upsert(Resource::kPods, pod("client-0", "node-1", "client"));
  // Forbidden for ~1.5 s (10 tries, back-off 20 ms doubling to 200 ms).
  h.fake.failNext(Resource::kPods, 403, 10);
  h.start({}, "node-1");
  ASSERT_TRUE(h.waitFor([](const Summary& s) { return !s.empty(); }, 1s));
  ASSERT_TRUE(h.lastSnapshot.services[0].policy.has_value());
  EXPECT_TRUE(allowedPods(h.lastSnapshot).empty()) << "meanwhile the policy allows nobody";
  EXPECT_FALSE(h.st(KubeResource::kPods).synced);
  ASSERT_TRUE(h.waitFor([&](const Summary&) { return !allowedPods(h.lastSnapshot).empty(); }, 10s));
  EXPECT_EQ(allowedPods(h.lastSnapshot), (std::vector<std::string>{"ml/llama ml/client-0"}));
  EXPECT_EQ(h.st(KubeResource::kPods).errors, 10u);
}

TEST(KubeSource, WithoutANodeNamePodsAreNotWatchedAndPoliciesAllowNobody) {
  Harness h;
  h.fake.upsert(Resource::kServices,
                service("ml", "llama", "10.96.0.20", 80, json::object(), {{"aimesh.io/allow-pods", "app=client"}}));
  h.fake.upsert(Resource::kPods, pod("client-0", "node-1", "client"));
  h.start();
  ASSERT_TRUE(h.waitFor([](const Summary& s) { return !s.empty(); }));
  EXPECT_EQ(h.fake.listRequests(Resource::kPods), 0);
  ASSERT_EQ(h.lastSnapshot.services.size(), 1u);
  ASSERT_TRUE(h.lastSnapshot.services[0].policy.has_value());
  EXPECT_TRUE(h.lastSnapshot.services[0].policy->allowPods.empty());
}

TEST(KubeSource, StopsPromptlyWithWatchesOpen) {
  Harness h;
  h.start();
  ASSERT_TRUE(h.waitForWatches());
  auto t0 = std::chrono::steady_clock::now();
  h.source.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
}

// ---- Gateway API routes ------------------------------------------------------

json route(const std::string& name, const std::string& parent, int w1, int w2) {
  return json{{"metadata", {{"name", name}, {"namespace", "ml"}}},
              {"spec",
               {{"parentRefs", json::array({{{"group", ""}, {"kind", "Service"}, {"name", parent}}})},
                {"rules", json::array({{{"backendRefs", json::array({{{"name", "v1"}, {"port", 80}, {"weight", w1}},
                                                                      {{"name", "v2"}, {"port", 80}, {"weight", w2}}})}}})}}}};
}

// The weight of v2 in the split of ml/llama in the last snapshot, or -1 when it is no split.
int v2Weight(const Snapshot& s) {
  const Service* llama = s.services.find("ml", "llama", true);
  if (!llama || llama->split.size() != 2) return -1;
  return static_cast<int>(llama->split[1].weight);
}

TEST(KubeSource, RoutesMakeSplitsAndFollowTheirWatchThroughFaults) {
  Harness h;
  for (auto [name, ip] : {std::pair{"llama", "10.96.0.20"}, {"v1", "10.96.0.21"}, {"v2", "10.96.0.22"}})
    h.fake.upsert(Resource::kServices, service("ml", name, ip));
  h.fake.upsert(Resource::kHttpRoutes, route("canary", "llama", 90, 10));
  h.start();
  ASSERT_TRUE(h.waitFor([&](const Summary&) { return v2Weight(h.lastSnapshot) == 10; }));
  ASSERT_TRUE(h.lastSnapshot.routes);
  EXPECT_EQ(h.lastSnapshot.routes->at(0).route, "HTTPRoute ml/canary");
  EXPECT_EQ(h.st(KubeResource::kHttpRoutes).objects, 1u);
  EXPECT_FALSE(h.st(KubeResource::kHttpRoutes).absent);

  // A weight edit through the watch; then the watch cut mid-event, and a 500.
  ASSERT_TRUE(h.fake.waitForWatches(Resource::kHttpRoutes, 1, 5s));
  h.fake.upsert(Resource::kHttpRoutes, route("canary", "llama", 50, 50));
  ASSERT_TRUE(h.waitFor([&](const Summary&) { return v2Weight(h.lastSnapshot) == 50; }));
  h.fake.dropWatchesMidEvent(Resource::kHttpRoutes);
  h.fake.failNext(Resource::kHttpRoutes, 500, 2);
  h.fake.upsert(Resource::kHttpRoutes, route("canary", "llama", 0, 100));
  ASSERT_TRUE(h.waitFor([&](const Summary&) { return v2Weight(h.lastSnapshot) == 100; }));
  EXPECT_GE(h.st(KubeResource::kHttpRoutes).errors, 1u);

  // The CRD deleted: its routes go, the resource is absent, the Services stay.
  h.fake.setInstalled(Resource::kHttpRoutes, false);
  ASSERT_TRUE(h.waitFor([&](const Summary&) { return v2Weight(h.lastSnapshot) == -1; }));
  EXPECT_TRUE(h.st(KubeResource::kHttpRoutes).absent);
  EXPECT_TRUE(h.st(KubeResource::kHttpRoutes).synced);
  EXPECT_FALSE(h.lastSnapshot.routes);
  EXPECT_EQ(h.lastSnapshot.services.size(), 3u);
}

TEST(KubeSource, WithoutTheRouteCrdsTheServicesAreHandedOutAtOnce) {
  Harness h;
  for (auto r : {Resource::kHttpRoutes, Resource::kGrpcRoutes, Resource::kTcpRoutes, Resource::kReferenceGrants})
    h.fake.setInstalled(r, false);
  h.fake.upsert(Resource::kServices, service("ml", "llama", "10.96.0.20"));
  h.start();
  ASSERT_TRUE(h.waitFor([](const Summary& s) { return !s.empty(); }, 2s));
  for (auto r : {KubeResource::kHttpRoutes, KubeResource::kGrpcRoutes, KubeResource::kTcpRoutes,
                 KubeResource::kReferenceGrants}) {
    EXPECT_TRUE(h.st(r).absent) << toString(r);
    EXPECT_EQ(h.st(r).errors, 0u) << toString(r) << ": a missing CRD is no error";
  }
  // Forbidden (no RBAC for them) is the same: routes off, Services on.
  Harness f;
  f.fake.failNext(Resource::kGrpcRoutes, 403, 100);
  f.fake.upsert(Resource::kServices, service("ml", "llama", "10.96.0.20"));
  f.start();
  ASSERT_TRUE(f.waitFor([](const Summary& s) { return !s.empty(); }, 2s));
  EXPECT_TRUE(f.st(KubeResource::kGrpcRoutes).absent);
}

// ---- InferencePools ----------------------------------------------------------

json inferencePool(const std::string& failureMode) {
  return json{{"metadata", {{"name", "llama-pool"}, {"namespace", "ml"}}},
              {"spec",
               {{"selector", {{"matchLabels", {{"app", "vllm"}}}}},
                {"targetPorts", json::array({{{"number", 8000}}})},
                {"endpointPickerRef", {{"name", "llama-epp"}, {"failureMode", failureMode}}}}}};
}

json poolPod(const std::string& name, const std::string& ip, bool ready, const std::string& node = "node-b") {
  return json{{"metadata", {{"name", name}, {"namespace", "ml"}, {"uid", "uid-" + name}, {"labels", {{"app", "vllm"}}}}},
              {"spec", {{"nodeName", node}}},
              {"status",
               {{"phase", "Running"},
                {"podIP", ip},
                {"podIPs", json::array({{{"ip", ip}}})},
                {"conditions", json::array({{{"type", "Ready"}, {"status", ready ? "True" : "False"}}})}}}};
}

json poolRoute() {
  return json{{"metadata", {{"name", "llama-route"}, {"namespace", "ml"}}},
              {"spec",
               {{"parentRefs", json::array({{{"group", ""}, {"kind", "Service"}, {"name", "llama"}}})},
                {"rules", json::array({{{"backendRefs", json::array({{{"group", "inference.networking.k8s.io"},
                                                                      {"kind", "InferencePool"},
                                                                      {"name", "llama-pool"}}})}}})}}}};
}

TEST(KubeSource, InferencePoolMembersFollowTheirPodsOnEveryNode) {
  Harness h;
  h.fake.upsert(Resource::kServices, service("ml", "llama", "10.96.0.20"));
  h.fake.upsert(Resource::kInferencePools, inferencePool("FailClose"));
  h.fake.upsert(Resource::kPods, poolPod("a", "10.244.0.1", true));
  h.fake.upsert(Resource::kPods, poolPod("b", "10.244.0.2", false, "node-c"));
  h.fake.upsert(Resource::kHttpRoutes, poolRoute());
  h.start({}, "node-a");  // this node's pods are watched too, with their own filter
  using V = std::vector<std::string>;
  ASSERT_TRUE(h.waitFor([](const Summary& s) { return s.count("ml/llama") && s.at("ml/llama") == V{"10.244.0.1:8000/active"}; }));
  EXPECT_EQ(h.st(KubeResource::kPoolPods).objects, 2u);
  EXPECT_EQ(h.st(KubeResource::kPods).objects, 0u) << "no pod runs on node-a";
  EXPECT_TRUE(h.lastSnapshot.services.find("ml", "llama", true)->failClose);

  // b turns ready through the watch; then every member is not ready: FailClose
  // refuses (no endpoint), FailOpen takes them all.
  ASSERT_TRUE(h.fake.waitForWatches(Resource::kPods, 2, 5s));
  h.fake.upsert(Resource::kPods, poolPod("b", "10.244.0.2", true, "node-c"));
  ASSERT_TRUE(h.waitFor([](const Summary& s) { return s.at("ml/llama").size() == 2; }));
  h.fake.upsert(Resource::kPods, poolPod("a", "10.244.0.1", false));
  h.fake.upsert(Resource::kPods, poolPod("b", "10.244.0.2", false, "node-c"));
  ASSERT_TRUE(h.waitFor([](const Summary& s) { return s.at("ml/llama").empty(); }));
  h.fake.upsert(Resource::kInferencePools, inferencePool("FailOpen"));
  ASSERT_TRUE(h.waitFor([](const Summary& s) {
    return s.at("ml/llama") == V{"10.244.0.1:8000/active", "10.244.0.2:8000/active"};
  }));
  EXPECT_FALSE(h.lastSnapshot.services.find("ml", "llama", true)->failClose);

  // The last pool deleted: the route is not applied, and the pods are no
  // longer watched or kept.
  h.fake.remove(Resource::kInferencePools, "ml", "llama-pool");
  ASSERT_TRUE(h.waitFor([&](const Summary& s) {
    return s.at("ml/llama").empty() && h.lastSnapshot.routes &&
           h.lastSnapshot.routes->at(0).state == RouteNote::State::kNotApplied;
  }));
  ASSERT_TRUE(h.waitFor([&](const Summary&) { return h.st(KubeResource::kPoolPods).objects == 0; }));
  EXPECT_FALSE(h.st(KubeResource::kPoolPods).synced);
}

int countRequests(const FakeApiServer& fake, const std::string& prefix) {
  int n = 0;
  for (const std::string& r : fake.requestLog()) n += r.rfind(prefix, 0) == 0;
  return n;
}

TEST(KubeSource, PoolPodsAreListedInThePoolsNamespaceAndInAllWhenPoolsSpanSeveral) {
  Harness h;
  h.fake.upsert(Resource::kServices, service("ml", "llama", "10.96.0.20"));
  h.fake.upsert(Resource::kInferencePools, inferencePool("FailClose"));
  h.fake.upsert(Resource::kPods, poolPod("a", "10.244.0.1", true));
  json elsewhere = poolPod("x", "10.244.9.1", true);
  elsewhere["metadata"]["namespace"] = "serving";
  h.fake.upsert(Resource::kPods, elsewhere);
  h.fake.upsert(Resource::kHttpRoutes, poolRoute());
  h.start();
  using V = std::vector<std::string>;
  ASSERT_TRUE(h.waitFor([](const Summary& s) { return s.count("ml/llama") && s.at("ml/llama") == V{"10.244.0.1:8000/active"}; }));
  EXPECT_EQ(h.st(KubeResource::kPoolPods).objects, 1u) << "only the pool's namespace";
  EXPECT_EQ(countRequests(h.fake, "GET /api/v1/namespaces/ml/pods?limit="), 1);
  EXPECT_EQ(countRequests(h.fake, "GET /api/v1/pods?limit="), 0);

  // A pool in a second namespace: the pods of all of them, listed again.
  json other = inferencePool("FailClose");
  other["metadata"]["namespace"] = "serving";
  h.fake.upsert(Resource::kInferencePools, other);
  ASSERT_TRUE(h.waitFor([&](const Summary&) { return h.st(KubeResource::kPoolPods).objects == 2; }));
  EXPECT_EQ(countRequests(h.fake, "GET /api/v1/pods?limit="), 1);
  ASSERT_TRUE(h.fake.waitForWatches(Resource::kPods, 1, 5s));
  // Back to one namespace: listed there again, the other pods dropped.
  h.fake.remove(Resource::kInferencePools, "serving", "llama-pool");
  ASSERT_TRUE(h.waitFor([&](const Summary&) { return h.st(KubeResource::kPoolPods).objects == 1; }));
  EXPECT_EQ(countRequests(h.fake, "GET /api/v1/namespaces/ml/pods?limit="), 2);
  // And the watch follows the members there.
  ASSERT_TRUE(h.fake.waitForWatches(Resource::kPods, 1, 5s));
  h.fake.upsert(Resource::kPods, poolPod("b", "10.244.0.2", true));
  ASSERT_TRUE(h.waitFor([](const Summary& s) { return s.at("ml/llama").size() == 2; }));
}

TEST(KubeSource, WithoutInferencePoolsNoPodsOfOtherNodesAreListed) {
  Harness h;
  h.fake.setInstalled(Resource::kInferencePools, false);
  h.fake.upsert(Resource::kServices, service("ml", "llama", "10.96.0.20"));
  h.start();
  ASSERT_TRUE(h.waitFor([](const Summary& s) { return !s.empty(); }, 2s));
  EXPECT_TRUE(h.st(KubeResource::kInferencePools).absent);
  EXPECT_EQ(h.fake.listRequests(Resource::kPods), 0);
  // Installed with no pool: still none.
  h.fake.setInstalled(Resource::kInferencePools, true);
  ASSERT_TRUE(h.waitFor([&](const Summary&) { return !h.st(KubeResource::kInferencePools).absent; }, 3s));
  EXPECT_EQ(h.fake.listRequests(Resource::kPods), 0);
  // A pool appears: the pods are listed before the next state is handed out.
  h.fake.upsert(Resource::kPods, poolPod("a", "10.244.0.1", true));
  h.fake.upsert(Resource::kHttpRoutes, poolRoute());
  h.fake.upsert(Resource::kInferencePools, inferencePool("FailClose"));
  ASSERT_TRUE(h.waitFor([](const Summary& s) { return s.at("ml/llama") == std::vector<std::string>{"10.244.0.1:8000/active"}; }));
  EXPECT_EQ(h.fake.listRequests(Resource::kPods), 1);
}

}  // namespace
}  // namespace aimesh
