#include "model/snapshot.h"

#include <gtest/gtest.h>

#include <string>

namespace aimesh {
namespace {

IpAddr ip(const std::string& s) {
  auto a = IpAddr::parse(s);
  EXPECT_TRUE(a.has_value()) << s;
  return a.value_or(IpAddr{});
}

TEST(SnapshotFormatHostPort, Ipv4) {
  EXPECT_EQ(formatHostPort(ip("10.77.0.2"), 8000), "10.77.0.2:8000");
  EXPECT_EQ(formatHostPort(ip("0.0.0.0"), 0), "0.0.0.0:0");
  EXPECT_EQ(formatHostPort(ip("255.255.255.255"), 65535), "255.255.255.255:65535");
}

TEST(SnapshotFormatHostPort, Ipv6InBrackets) {
  EXPECT_EQ(formatHostPort(ip("fd77::2"), 8000), "[fd77::2]:8000");
  EXPECT_EQ(formatHostPort(ip("::1"), 80), "[::1]:80");
  EXPECT_EQ(formatHostPort(ip("::"), 0), "[::]:0");
  // RFC 5952 form, whatever was parsed.
  EXPECT_EQ(formatHostPort(ip("FD00:0:0:0:0:0:0:0001"), 443), "[fd00::1]:443");
  EXPECT_EQ(formatHostPort(ip("2001:db8:1:2:3:4:5:6"), 1), "[2001:db8:1:2:3:4:5:6]:1");
}

TEST(SnapshotFormatHostPort, Ipv4MappedIsWrittenAsIpv4) {
  // IpAddr holds IPv4 as ::ffff:a.b.c.d; both spellings are the same address.
  EXPECT_EQ(formatHostPort(ip("::ffff:10.0.0.1"), 8000), "10.0.0.1:8000");
  EXPECT_EQ(ip("::ffff:10.0.0.1"), ip("10.0.0.1"));
  // Not mapped (::10.0.0.1, the old IPv4-compatible form) is IPv6, dots and all.
  EXPECT_EQ(formatHostPort(ip("::10.0.0.1"), 8000), "[::10.0.0.1]:8000");
}

TEST(SnapshotFormatFrontend, AddressPortProtocol) {
  EXPECT_EQ(formatFrontend(ip("10.96.0.1"), 80, Protocol::kTcp), "10.96.0.1:80/TCP");
  EXPECT_EQ(formatFrontend(ip("fd00::1"), 53, Protocol::kUdp), "[fd00::1]:53/UDP");
  EXPECT_EQ(formatFrontend(ip("::ffff:10.96.0.1"), 8000, Protocol::kUdp), "10.96.0.1:8000/UDP");
}

TEST(SnapshotAlgorithms, EveryAlgorithmOnceRoundTrips) {
  size_t n = 0;
  for (Algorithm a : kAlgorithms) {
    EXPECT_EQ(static_cast<size_t>(a), n++);  // enum order, none left out
    EXPECT_EQ(parseAlgorithm(toString(a)), a);
  }
  EXPECT_EQ(n, 5u);
}

}  // namespace
}  // namespace aimesh

namespace aimesh {
namespace {

Service named(std::string ns, std::string name) {
  Service s;
  s.nameSpace = std::move(ns);
  s.name = std::move(name);
  return s;
}

// compareKeys() orders as the key strings do, including where the
// namespaces alone would order otherwise ("ns" < "ns-a", but "ns-a/x" <
// "ns/x" since '-' < '/').
TEST(SnapshotKeys, CompareKeysOrdersAsTheKeyStrings) {
  std::vector<Service> all = {named("ns", "x"),   named("ns-a", "x"), named("ns", "x-1"), named("n", "s/x"),
                              named("ns", ""),    named("", "ns"),    named("a/b", "c"),  named("a", "b/c"),
                              named("ns", "x"),   named("NS", "x"),   named("ns0", "a"),  named("ns", "\xff")};
  for (auto& a : all)
    for (auto& b : all) {
      int want = a.key() < b.key() ? -1 : a.key() == b.key() ? 0 : 1;
      EXPECT_EQ(compareKeys(a, b), want) << a.key() << " vs " << b.key();
      EXPECT_EQ(keyLess(a, b), want < 0);
    }
}

}  // namespace
}  // namespace aimesh
