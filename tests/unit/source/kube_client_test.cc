// Where the Kubernetes API is and how to authenticate: kubeconfig files,
// in-cluster service-account config, base64. (Requests themselves are tested
// against the fake API server in kube_source_test.cc.)
#include "source/kube_client.h"

#include <gtest/gtest.h>

#include "fixtures/sandbox.h"
#include <stdlib.h>

#include <filesystem>
#include <fstream>

namespace aimesh {
namespace {

namespace fs = std::filesystem;


TEST(Base64, DecodesStandardAndUrlAlphabetsWithPaddingAndNewlines) {
  EXPECT_EQ(*base64Decode("aGVsbG8="), "hello");
  EXPECT_EQ(*base64Decode("aGVs\nbG8h"), "hello!");
  EXPECT_EQ(*base64Decode(""), "");
  EXPECT_EQ(*base64Decode("-_8="), std::string("\xfb\xff", 2));
}

TEST(Base64, RejectsCharactersOutsideTheAlphabet) {
  auto r = base64Decode("aGV*bG8=");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("'*'"), std::string::npos) << r.error().message();
  EXPECT_FALSE(base64Decode("aG=Vs"));  // data after padding
}

const char* kKubeconfig = R"(apiVersion: v1
kind: Config
current-context: dev
clusters:
  - name: prod
    cluster:
      server: https://10.0.0.1:6443/
      certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==
  - name: dev
    cluster:
      server: https://127.0.0.1:6443
      certificate-authority: certs/ca.pem
contexts:
  - name: dev
    context: {cluster: dev, user: dev-user}
  - name: prod
    context: {cluster: prod, user: prod-user}
users:
  - name: dev-user
    user:
      tokenFile: token
  - name: prod-user
    user:
      token: abc123
      client-certificate-data: Y2VydA==
      client-key-data: a2V5
)";

TEST(Kubeconfig, CurrentContextWithRelativePathsResolvedAgainstTheFile) {
  testing::ScratchDir d;
  auto path = d.write("config", kKubeconfig);
  auto c = loadKubeconfig(path);
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->server, "https://127.0.0.1:6443");
  EXPECT_EQ(c->caFile, d.path() + "/certs/ca.pem");
  EXPECT_EQ(c->tokenFile, d.path() + "/token");
  EXPECT_TRUE(c->token.empty());
  EXPECT_NE(c->source.find("context dev"), std::string::npos);
}

TEST(Kubeconfig, NamedContextWithInlineDataAndTrailingSlashTrimmed) {
  testing::ScratchDir d;
  auto c = loadKubeconfig(d.write("config", kKubeconfig), "prod");
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->server, "https://10.0.0.1:6443");
  EXPECT_EQ(c->caData, "-----BEGIN CERTIFICATE-----\n");
  EXPECT_EQ(c->token, "abc123");
  EXPECT_EQ(c->clientCertData, "cert");
  EXPECT_EQ(c->clientKeyData, "key");
}

TEST(Kubeconfig, ErrorsNameTheFileAndWhatIsMissing) {
  testing::ScratchDir d;
  auto path = d.write("config", kKubeconfig);
  auto c = loadKubeconfig(path, "staging");
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message().find(path), std::string::npos);
  EXPECT_NE(c.error().message().find("no context named 'staging'"), std::string::npos) << c.error().message();

  auto noServer = d.write("noserver", R"(current-context: x
contexts: [{name: x, context: {cluster: c}}]
clusters: [{name: c, cluster: {}}]
)");
  c = loadKubeconfig(noServer);
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message().find("clusters[c].cluster.server is missing"), std::string::npos)
      << c.error().message();

  auto exec = d.write("exec", R"(current-context: x
contexts: [{name: x, context: {cluster: c, user: u}}]
clusters: [{name: c, cluster: {server: "https://127.0.0.1"}}]
users: [{name: u, user: {exec: {command: aws}}}]
)");
  c = loadKubeconfig(exec);
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message().find("exec and auth-provider"), std::string::npos) << c.error().message();

  auto bad = d.write("bad", "clusters: [\n");
  c = loadKubeconfig(bad);
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message().find(bad + ":"), std::string::npos) << c.error().message();

  c = loadKubeconfig(d.path() + "/missing");
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message().find("missing"), std::string::npos);
}

class EnvGuard {
 public:
  EnvGuard(const char* name, const char* value) : name_(name) {
    if (const char* old = ::getenv(name)) old_ = old;
    if (value) ::setenv(name, value, 1);
    else ::unsetenv(name);
  }
  ~EnvGuard() {
    if (old_) ::setenv(name_, old_->c_str(), 1);
    else ::unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(InClusterConfig, ServiceHostAndPortFromTheEnvironmentCredentialsFromTheServiceAccount) {
  testing::ScratchDir d;
  d.write("token", "tok\n");
  d.write("ca.crt", "pem");
  {
    EnvGuard h("KUBERNETES_SERVICE_HOST", "10.96.0.1"), p("KUBERNETES_SERVICE_PORT", "443");
    auto c = inClusterConfig(d.path());
    ASSERT_TRUE(c) << c.error().message();
    EXPECT_EQ(c->server, "https://10.96.0.1:443");
    EXPECT_EQ(c->caFile, d.path() + "/ca.crt");
    EXPECT_EQ(c->tokenFile, d.path() + "/token");
  }
  {
    EnvGuard h("KUBERNETES_SERVICE_HOST", "fd00::1"), p("KUBERNETES_SERVICE_PORT", "443");
    auto c = inClusterConfig(d.path());
    ASSERT_TRUE(c) << c.error().message();
    EXPECT_EQ(c->server, "https://[fd00::1]:443");
  }
}

TEST(InClusterConfig, SaysWhatIsMissing) {
  testing::ScratchDir d;
  {
    EnvGuard h("KUBERNETES_SERVICE_HOST", nullptr), p("KUBERNETES_SERVICE_PORT", nullptr);
    auto c = inClusterConfig(d.path());
    ASSERT_FALSE(c);
    EXPECT_NE(c.error().message().find("KUBERNETES_SERVICE_HOST"), std::string::npos);
  }
  {
    EnvGuard h("KUBERNETES_SERVICE_HOST", "10.96.0.1"), p("KUBERNETES_SERVICE_PORT", "443");
    auto c = inClusterConfig(d.path());  // no token, no ca.crt
    ASSERT_FALSE(c);
    EXPECT_NE(c.error().message().find(d.path()), std::string::npos) << c.error().message();
  }
}

}  // namespace
}  // namespace aimesh
