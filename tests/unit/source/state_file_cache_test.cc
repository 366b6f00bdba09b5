// The state file's item cache (StateFileCache): a re-read that reuses the
// services of unchanged list items must give exactly what a full parse
// gives — the same snapshot, the same errors at the same positions — for
// any file and any edit; and it must actually reuse them for the usual
// layout.
#include <gtest/gtest.h>

#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "source/state_file.h"

namespace aimesh {
namespace {

std::vector<std::string> errorsOf(const ParseResult& r) {
  std::vector<std::string> out;
  for (const auto& e : r.errors) out.push_back(e.toString());
  return out;
}

// Parses with and without the cache and holds them equal.
void expectSameAsFullParse(const std::string& text, StateFileCache& cache, const std::string& what) {
  ParseResult full = parseStateText(text, "s.yaml");
  ParseResult cached = parseStateText(text, "s.yaml", &cache);
  ASSERT_EQ(cached.ok(), full.ok()) << what << "\n" << text;
  if (full.ok()) {
    ASSERT_EQ(*cached.snapshot, *full.snapshot) << what << "\n" << text;
  }
  ASSERT_EQ(errorsOf(cached), errorsOf(full)) << what << "\n" << text;
}

std::string serviceYaml(int i, int endpoints, int port = 8000) {
  std::ostringstream y;
  y << "  - name: svc-" << i << "\n    namespace: bench\n    vips: [10.100." << i / 250 << "." << i % 250 + 1
    << "]\n    ports: [{port: " << port << "}]\n    endpoints:\n";
  for (int e = 0; e < endpoints; ++e)
    y << "      - {address: 10.120." << i / 64 << "." << (i % 64) * 4 + e << ", port: 8000}\n";
  return y.str();
}

TEST(StateFileCacheTest, ASaveThatChangesOneServiceParsesOnlyThatOne) {
  std::string head = "# the cluster\nservices:\n";
  std::vector<std::string> items;
  for (int i = 0; i < 1000; ++i) items.push_back(serviceYaml(i, 4));
  auto join = [&] {
    std::string t = head;
    for (auto& s : items) t += s;
    return t;
  };
  StateFileCache cache;
  ParseResult first = parseStateText(join(), "s.yaml", &cache);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(cache.reused(), 0u) << "the first read parses the whole file";
  EXPECT_EQ(cache.size(), 1000u);

  items[17] = serviceYaml(17, 5);
  std::string text = join();
  ParseResult second = parseStateText(text, "s.yaml", &cache);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(cache.reused(), 999u);
  EXPECT_EQ(*second.snapshot, *parseStateText(text, "s.yaml").snapshot);
  // Services it did not parse again are the very ones it parsed before.
  size_t shared = 0;
  for (size_t i = 0; i < second.snapshot->services.size(); ++i)
    shared += second.snapshot->services.ptr(i) == first.snapshot->services.ptr(i);
  EXPECT_EQ(shared, 999u);

  // An error: the whole file is parsed, for the exact position.
  items[500] = serviceYaml(500, 1, 70000);
  text = join();
  ParseResult bad = parseStateText(text, "s.yaml", &cache);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(cache.reused(), 0u);
  EXPECT_EQ(errorsOf(bad), errorsOf(parseStateText(text, "s.yaml")));
  ASSERT_EQ(bad.errors.size(), 1u);
  EXPECT_EQ(bad.errors[0].field, "services[500].ports[0].port");
}

TEST(StateFileCacheTest, OnlyTheUsualLayoutIsCut) {
  auto cut = [](std::string_view t) { return splitStateItems(t); };
  const std::string text = "# c\n\nservices:\n  - name: a\n    vips: [\"10.0.0.1\"]\n  # c\n\n  - name: b\n";
  auto two = cut(text);
  ASSERT_TRUE(two);
  ASSERT_EQ(two->size(), 2u);
  EXPECT_EQ((*two)[0], "  - name: a\n    vips: [\"10.0.0.1\"]\n  # c\n\n");
  EXPECT_EQ((*two)[1], "  - name: b\n");
  EXPECT_TRUE(cut("services:\n    -\n      name: a\n    - name: b\n"));
  for (const char* t : {
           "services:\n- name: a\n",                                // items at the key's indentation
           "services: [{name: a}]\n",                               // flow
           "---\nservices:\n  - name: a\n",                         // a document marker
           "services:  # list\n  - name: a\n",                      // a comment after the key
           "services:\n  - name: a\n other: 1\n",                   // less indented
           "services:\n  - name: a\n  name: b\n",                   // a key at the items' indentation
           "services:\n  - &x {name: a}\n  - *x\n",                 // anchors, aliases
           "services:\n  - name: !!str a\n",                        // tags
           "services:\n  - name: a\n    model: |\n      x\n",       // block scalars
           "services:\n  - name: \"a\n  - b\"\n",                   // a quote across lines
           "services:\n  - vips: [10.0.0.1,\n  - 10.0.0.2]\n",      // a flow list across lines
           "services:\n  - name: a\r\n",                            // CR
           "services:\n  -\tname: a\n",                             // tab
           "services:\n  ? a\n",                                    // complex key
           "services:\n",                                           // no items
           "other: 1\nservices:\n  - name: a\n",                    // another top-level key
       })
    EXPECT_FALSE(cut(t)) << t;
}

// Random files and random edits: the cache never changes a result.
TEST(StateFileCacheTest, AnyFileAndAnyEditParseAsAFullParseDoes) {
  for (uint32_t seed : {1u, 2u, 3u}) {
    std::mt19937 rng(seed);
    auto pick = [&](int n) { return std::uniform_int_distribution<>(0, n - 1)(rng); };
    struct Svc {
      int id, endpoints, port, style;
      bool quoted, comment, dupVip, anchor;
    };
    std::vector<Svc> svcs;
    for (int i = 0; i < 30; ++i) svcs.push_back({i, pick(4), 8000, pick(3), false, false, false, false});
    auto render = [&] {
      std::ostringstream y;
      if (pick(4) == 0) y << "# state\n";
      y << "services:\n";
      for (const Svc& s : svcs) {
        if (s.comment) y << "  # service " << s.id << "\n\n";
        std::string name = s.quoted ? "\"svc-" + std::to_string(s.id) + "\"" : "svc-" + std::to_string(s.id);
        std::string vip = s.dupVip ? "10.100.0.1" : "10.100." + std::to_string(s.id / 250) + "." +
                                                       std::to_string(s.id % 250 + 1);
        if (s.style == 0) {
          y << "  - name: " << name << "\n    namespace: bench\n    vips: [" << vip << "]\n    ports: [{port: "
            << s.port << "}]\n";
          if (s.endpoints) y << "    endpoints:\n";
          for (int e = 0; e < s.endpoints; ++e)
            y << "      - address: 10.120." << s.id << "." << e + 1 << "\n        port: 8000\n";
        } else if (s.style == 1) {
          y << "  - {name: " << name << ", vips: [" << vip << "], ports: [{port: " << s.port << "}]}\n";
        } else {
          y << "  -\n    name: " << name << "\n    vips:\n      - " << vip << "\n    ports:\n      - port: " << s.port
            << "\n        protocol: TCP\n";
          if (s.anchor) y << "    model: &m llama\n";
          y << "    endpoints: [";
          for (int e = 0; e < s.endpoints; ++e) y << (e ? ", " : "") << "{address: 10.121." << s.id << "." << e + 1 << ", port: 9000}";
          y << "]\n";
        }
      }
      return y.str();
    };
    StateFileCache cache;
    int reusedRounds = 0;
    for (int round = 0; round < 200; ++round) {
      // What sends a read to a full parse (an error, an address used twice,
      // an anchor) lasts one round, so that most rounds can reuse.
      for (Svc& g : svcs) {
        if (g.port == 70000) g.port = 8000;
        g.dupVip = g.anchor = false;
      }
      Svc& s = svcs[pick(static_cast<int>(svcs.size()))];
      switch (pick(10)) {
        case 0: s.endpoints = pick(5); break;
        case 1: s.port = pick(20) == 0 ? 70000 : 8000 + pick(3); break;  // sometimes invalid
        case 2: s.style = pick(3); break;
        case 3: s.quoted = !s.quoted; break;
        case 4: s.comment = !s.comment; break;
        case 5: s.dupVip = pick(4) == 0; break;  // sometimes another's address
        case 6: s.anchor = pick(5) == 0; break;  // not cut: a full parse
        case 7: svcs.push_back({100 + round, pick(3), 8000, pick(3), false, false, false, false}); break;
        case 8:
          if (svcs.size() > 2) svcs.erase(svcs.begin() + pick(static_cast<int>(svcs.size())));
          break;
        default: std::swap(svcs[pick(static_cast<int>(svcs.size()))], svcs[pick(static_cast<int>(svcs.size()))]);
      }
      std::string text = render();
      expectSameAsFullParse(text, cache, "seed " + std::to_string(seed) + " round " + std::to_string(round));
      if (cache.reused() > 0) ++reusedRounds;
    }
    EXPECT_GT(reusedRounds, 50) << "seed " << seed << ": the cache was hardly used";
  }
}

}  // namespace
}  // namespace aimesh
