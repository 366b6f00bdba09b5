#include "util/host_port.h"

#include <gtest/gtest.h>

namespace aimesh {
namespace {

TEST(HostPortBracketHost, Ipv6GetsBracketsOnce) {
  EXPECT_EQ(bracketHost("fd00::1"), "[fd00::1]");
  EXPECT_EQ(bracketHost("::"), "[::]");
  EXPECT_EQ(bracketHost("::ffff:10.0.0.1"), "[::ffff:10.0.0.1]");  // a literal as given, not an IpAddr
  EXPECT_EQ(bracketHost("fe80::1%eth0"), "[fe80::1%eth0]");
  EXPECT_EQ(bracketHost("[fd00::1]"), "[fd00::1]");  // already in brackets
}

TEST(HostPortBracketHost, Ipv4AndNamesUnchanged) {
  EXPECT_EQ(bracketHost("10.0.0.1"), "10.0.0.1");
  EXPECT_EQ(bracketHost("localhost"), "localhost");
  EXPECT_EQ(bracketHost("kubernetes.default.svc"), "kubernetes.default.svc");
  EXPECT_EQ(bracketHost(""), "");
}

TEST(HostPortFormat, HostAndPort) {
  EXPECT_EQ(formatHostPort("10.0.0.1", 8000), "10.0.0.1:8000");
  EXPECT_EQ(formatHostPort("0.0.0.0", 0), "0.0.0.0:0");
  EXPECT_EQ(formatHostPort("::1", 9464), "[::1]:9464");
  EXPECT_EQ(formatHostPort("[::1]", 9464), "[::1]:9464");
  EXPECT_EQ(formatHostPort("::ffff:10.0.0.1", 65535), "[::ffff:10.0.0.1]:65535");
  EXPECT_EQ(formatHostPort("localhost", 80), "localhost:80");
}

}  // namespace
}  // namespace aimesh
