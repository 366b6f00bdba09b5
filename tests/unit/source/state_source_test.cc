// Unit tests of StateFileSource: the state file read now (current), a save
// seen by the watch (next), a rejected file's errors with their place, and a
// quiet file giving nothing within the timeout.
#include "source/state_source.h"

#include <gtest/gtest.h>

#include "fixtures/sandbox.h"

namespace aimesh {
namespace {

using namespace std::chrono_literals;

const char* kGood = R"(services:
  - name: llm
    namespace: ml
    vips: [10.96.0.40]
    ports: [{port: 8000}]
    endpoints: [{address: 10.77.0.2, port: 8000}]
)";

TEST(StateFileSourceTest, ReadsTheFileNowAndAgainWhenItIsSaved) {
  testing::ScratchDir dir;
  std::string path = dir.write("state.yaml", kGood);
  StateFileSource src(path);
  EXPECT_EQ(src.describe(), "file " + path);
  auto now = src.current();
  ASSERT_TRUE(now && now->ok());
  EXPECT_EQ(now->snapshot->services.size(), 1u);
  EXPECT_FALSE(src.next(100ms).has_value()) << "nothing changed";

  testing::writeFile(path, std::string(kGood) + "  - name: chat\n    ports: [{port: 70000}]\n");
  auto saved = src.next(2000ms);
  ASSERT_TRUE(saved.has_value());
  EXPECT_FALSE(saved->ok());
  ASSERT_FALSE(saved->errors.empty());
  EXPECT_NE(saved->errors[0].find("state.yaml:7:"), std::string::npos) << saved->errors[0];
}

TEST(StateFileSourceTest, AMissingFileIsAnErrorNotACrash) {
  testing::ScratchDir dir;
  StateFileSource src(dir.path() + "/absent.yaml");
  auto now = src.current();
  ASSERT_TRUE(now.has_value());
  EXPECT_FALSE(now->ok());
  EXPECT_FALSE(now->errors.empty());
  testing::writeFile(dir.path() + "/absent.yaml", kGood);
  auto created = src.next(2000ms);
  ASSERT_TRUE(created.has_value()) << "the watch is on the directory";
  EXPECT_TRUE(created->ok());
}

}  // namespace
}  // namespace aimesh
