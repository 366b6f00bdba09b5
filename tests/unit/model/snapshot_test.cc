#include "model/snapshot.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

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

// Snapshots share services: a copy of a snapshot costs pointers, a change
// through mut() copies only the service changed (copy on write), and
// comparison looks inside only where the pointers differ.
TEST(SharedServicesTest, CopiesShareAndMutCopiesOnlyWhatChanges) {
  Snapshot a;
  a.services.push_back(named("ns", "x"));
  a.services.push_back(named("ns", "y"));
  Snapshot b = a;
  EXPECT_EQ(a.services.ptr(0), b.services.ptr(0));
  EXPECT_EQ(a, b);
  b.services.mut(1).model = "llama";
  EXPECT_EQ(a.services.ptr(0), b.services.ptr(0)) << "the unchanged service stays shared";
  EXPECT_NE(a.services.ptr(1), b.services.ptr(1));
  EXPECT_EQ(a.services[1].model, "") << "a change to one snapshot must not show in another";
  EXPECT_EQ(b.services[1].model, "llama");
  EXPECT_NE(a, b);
  // Held by one list only: changed in place.
  const Service* before = b.services.ptr(1).get();
  b.services.mut(1).model = "mistral";
  EXPECT_EQ(b.services.ptr(1).get(), before);
  // Equal values behind different pointers are equal.
  Snapshot c;
  c.services.push_back(named("ns", "x"));
  c.services.push_back(named("ns", "y"));
  EXPECT_EQ(a, c);
}

TEST(SharedServicesTest, ReadsLikeAVectorAndSortsByKey) {
  SharedServices s{named("b", "2"), named("a", "9"), named("b", "1"), named("a", "9")};
  s.mut(3).model = "second";
  s.sortByKey();
  std::vector<std::string> keys;
  for (const Service& x : s) keys.push_back(x.key());
  EXPECT_EQ(keys, (std::vector<std::string>{"a/9", "a/9", "b/1", "b/2"}));
  EXPECT_EQ(s[1].model, "second") << "a stable sort keeps equal keys in order";
  EXPECT_EQ(s.end() - s.begin(), 4);
  EXPECT_EQ(std::find_if(s.begin(), s.end(), [](const Service& x) { return x.name == "1"; }) - s.begin(), 2);
  s.erase(s.begin() + 1);
  EXPECT_EQ(s.size(), 3u);
  EXPECT_EQ(s.back().key(), "b/2");
  s.resize(1);
  EXPECT_EQ(s.front().key(), "a/9");
  Service& added = s.emplace_back(named("c", "3"));
  added.model = "m";
  EXPECT_EQ(s.at(1).model, "m");
  EXPECT_THROW(s.at(2), std::out_of_range);
}

}  // namespace
}  // namespace aimesh
