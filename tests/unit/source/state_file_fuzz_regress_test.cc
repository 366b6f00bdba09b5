// Regression tests for what fuzzing the state-file parser found
// (tests/fuzz/fuzz_state_file.cc; the inputs are also in its seed corpus,
// tests/fuzz/corpus/fuzz_state_file/regress_*).
#include "source/state_file.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

namespace aimesh {
namespace {

// Parses in a forked child, which is killed if it has not finished within
// `limit`: a parser that loops forever fails the test instead of hanging it.
// Returns the child's exit status, or -1 if it had to be killed.
int parseInChild(const std::string& text, std::chrono::milliseconds limit) {
  pid_t pid = fork();
  if (pid == 0) {
    ParseResult r = parseStateText(text, "fuzz.yaml");
    _exit(r.ok() ? 0 : 1);
  }
  auto deadline = std::chrono::steady_clock::now() + limit;
  int status = 0;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// yaml-cpp 0.7's LoadAll() looped forever on a stray ',' at the top level,
// adding a null document per turn until memory ran out. The parser is
// libyaml's now; the input stays a syntax error that names where it is.
TEST(StateFileFuzzRegress, StrayCommaIsAnErrorNotAHang) {
  for (const std::string text : {",", ", po", "services: []\n---\n,",
                                 ", ports: [{port: 80}]}\n  - {name: chat, vips: [10.96.0.1]}\n"}) {
    SCOPED_TRACE(text);
    ASSERT_EQ(parseInChild(text, std::chrono::seconds(10)), 1) << "did not finish, or crashed";
    ParseResult r = parseStateText(text, "fuzz.yaml");
    EXPECT_FALSE(r.ok());
    ASSERT_EQ(r.errors.size(), 1u);
    EXPECT_EQ(r.errors[0].line, text[0] == ',' ? 1 : 3) << r.errors[0].toString();
    EXPECT_EQ(r.errors[0].column, 1) << r.errors[0].toString();
    EXPECT_TRUE(r.errors[0].message.ends_with(", found ','")) << r.errors[0].toString();
  }
}

// Several documents are still one error, not a false "stuck" report.
TEST(StateFileFuzzRegress, SeveralDocumentsStillReported) {
  ParseResult r = parseStateText("services: []\n---\nservices: []\n", "fuzz.yaml");
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_NE(r.errors[0].message.find("only one YAML document"), std::string::npos) << r.errors[0].toString();
}

// Every map's keys were read through a reference into a temporary that
// yaml-cpp's iterator returns (stack-use-after-scope under ASan on any file;
// scripts/test.sh --sanitize runs this test with ASan).
TEST(StateFileFuzzRegress, MapKeysOutliveTheIterator) {
  ParseResult r = parseStateText("services:\n  - name: chat\n    vips: [10.96.0.1]\n    ports: [{port: 8000}]\n",
                                 "fuzz.yaml");
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r.snapshot->services.size(), 1u);
  EXPECT_EQ(r.snapshot->services[0].name, "chat");
  EXPECT_EQ(r.snapshot->services[0].ports[0].port, 8000);
}

}  // namespace
}  // namespace aimesh
