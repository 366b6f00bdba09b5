#include "source/file_watcher.h"

#include <gtest/gtest.h>

#include "fixtures/sandbox.h"
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <type_traits>

namespace aimesh {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

// Generous: a loaded CI machine may be slow to deliver events, but a change
// that does come is reported at once, so this only costs time on failure.
constexpr auto kChangeTimeout = 2000ms;
// How long to wait when asserting that nothing is reported.
constexpr auto kQuiet = 150ms;

static_assert(!std::is_copy_constructible_v<FileWatcher>);
static_assert(std::is_nothrow_move_constructible_v<FileWatcher>);


void writeFile(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::trunc);
  out << text;
}

class FileWatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty()) << "mkdtemp failed";
    file_ = fs::path(dir_.path()) / "state.yaml";
  }

  FileWatcher make() {
    auto w = FileWatcher::create(file_.string());
    EXPECT_TRUE(w.ok()) << (w.ok() ? "" : w.error().message());
    return std::move(w).value();
  }

  testing::ScratchDir dir_;
  fs::path file_;
};

TEST_F(FileWatcherTest, NoChangeTimesOut) {
  writeFile(file_, "services: []\n");
  FileWatcher w = make();
  auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(w.waitForChange(kQuiet));
  EXPECT_GE(std::chrono::steady_clock::now() - start, kQuiet - 5ms);
  EXPECT_FALSE(w.waitForChange(0ms));
}

TEST_F(FileWatcherTest, InPlaceWriteIsOneChange) {
  writeFile(file_, "services: []\n");
  FileWatcher w = make();
  writeFile(file_, "services: []\n# edited\n");
  EXPECT_TRUE(w.waitForChange(kChangeTimeout));
  // open+write+close produced several events; all were consumed as one.
  EXPECT_FALSE(w.waitForChange(kQuiet));
}

TEST_F(FileWatcherTest, BurstOfWritesIsDebouncedIntoOneChange) {
  FileWatcher w = make();
  for (int i = 0; i < 5; ++i) writeFile(file_, "services: []\n# " + std::to_string(i) + "\n");
  EXPECT_TRUE(w.waitForChange(kChangeTimeout));
  EXPECT_FALSE(w.waitForChange(kQuiet));
}

TEST_F(FileWatcherTest, CreatedFileIsAChange) {
  // The watcher may start before the file exists.
  FileWatcher w = make();
  writeFile(file_, "services: []\n");
  EXPECT_TRUE(w.waitForChange(kChangeTimeout));
}

TEST_F(FileWatcherTest, RenameReplaceIsSeenEveryTime) {
  writeFile(file_, "services: []\n");
  FileWatcher w = make();
  // Atomic save, as editors and config managers do it: a new inode each
  // time. A watch on the file itself would go blind after the first one.
  for (int i = 0; i < 3; ++i) {
    fs::path tmp = fs::path(dir_.path()) / (".state.yaml.tmp" + std::to_string(i));
    writeFile(tmp, "services: []\n# v" + std::to_string(i) + "\n");
    // Drain the temp file's events: they are not ours and must not count.
    EXPECT_FALSE(w.waitForChange(50ms)) << "temp file events reported as a change, round " << i;
    fs::rename(tmp, file_);
    EXPECT_TRUE(w.waitForChange(kChangeTimeout)) << "round " << i;
    EXPECT_FALSE(w.waitForChange(kQuiet)) << "round " << i;
  }
}

TEST_F(FileWatcherTest, AFinishedSaveIsReportedWithoutTheDebounce) {
  // A rename onto the file leaves a whole file: nothing to wait for, so a
  // change reaches the data plane without kDebounce of quiet first.
  writeFile(file_, "services: []\n");
  FileWatcher w = make();
  fs::path tmp = fs::path(dir_.path()) / ".state.yaml.tmp";
  writeFile(tmp, "services: []\n# v2\n");
  EXPECT_FALSE(w.waitForChange(50ms));
  fs::rename(tmp, file_);
  auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(w.waitForChange(kChangeTimeout));
  EXPECT_LT(std::chrono::steady_clock::now() - start, FileWatcher::kDebounce);
  // The same for an in-place write once it is closed.
  writeFile(file_, "services: []\n# v3\n");
  start = std::chrono::steady_clock::now();
  EXPECT_TRUE(w.waitForChange(kChangeTimeout));
  EXPECT_LT(std::chrono::steady_clock::now() - start, FileWatcher::kDebounce);
}

TEST_F(FileWatcherTest, AWriteLeftOpenIsDebounced) {
  writeFile(file_, "services: []\n");
  FileWatcher w = make();
  std::ofstream out(file_, std::ios::trunc);
  out << "services: []\n" << std::flush;
  auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(w.waitForChange(kChangeTimeout));
  // No close yet: the writer may not be done, so it waited for quiet.
  EXPECT_GE(std::chrono::steady_clock::now() - start, FileWatcher::kDebounce - 5ms);
  out.close();
  EXPECT_TRUE(w.waitForChange(kChangeTimeout));  // the close finishes the save
}

TEST_F(FileWatcherTest, DeleteIsAChange) {
  writeFile(file_, "services: []\n");
  FileWatcher w = make();
  fs::remove(file_);
  EXPECT_TRUE(w.waitForChange(kChangeTimeout));
}

TEST_F(FileWatcherTest, OtherFilesInTheDirectoryAreIgnored) {
  writeFile(file_, "services: []\n");
  FileWatcher w = make();
  writeFile(fs::path(dir_.path()) / "other.yaml", "x");
  writeFile(fs::path(dir_.path()) / "state.yaml.bak", "x");
  fs::rename(fs::path(dir_.path()) / "other.yaml", fs::path(dir_.path()) / "other2.yaml");
  EXPECT_FALSE(w.waitForChange(kQuiet));
}

TEST_F(FileWatcherTest, ConfigMapSymlinkSwapIsAChange) {
  // Kubernetes ConfigMap volumes: state.yaml -> ..data/state.yaml, and an
  // update renames a new "..data" symlink into place.
  fs::create_directory(fs::path(dir_.path()) / "..v1");
  fs::create_directory(fs::path(dir_.path()) / "..v2");
  writeFile(fs::path(dir_.path()) / "..v1" / "state.yaml", "services: []\n");
  writeFile(fs::path(dir_.path()) / "..v2" / "state.yaml", "services: []\n# v2\n");
  fs::create_directory_symlink("..v1", fs::path(dir_.path()) / "..data");
  fs::create_symlink("..data/state.yaml", file_);
  FileWatcher w = make();
  fs::create_directory_symlink("..v2", fs::path(dir_.path()) / "..data_tmp");
  fs::rename(fs::path(dir_.path()) / "..data_tmp", fs::path(dir_.path()) / "..data");
  EXPECT_TRUE(w.waitForChange(kChangeTimeout));
}

TEST_F(FileWatcherTest, FdIsPollable) {
  FileWatcher w = make();
  ASSERT_GE(w.fd(), 0);
  writeFile(file_, "services: []\n");
  pollfd p{w.fd(), POLLIN, 0};
  ASSERT_EQ(poll(&p, 1, static_cast<int>(kChangeTimeout.count())), 1);
  EXPECT_TRUE(p.revents & POLLIN);
  // After an outer poll, a zero timeout consumes the change.
  EXPECT_TRUE(w.waitForChange(0ms));
  p.revents = 0;
  EXPECT_EQ(poll(&p, 1, 0), 0) << "events left behind after waitForChange";
}

TEST_F(FileWatcherTest, MoveTransfersOwnership) {
  FileWatcher a = make();
  int fd = a.fd();
  FileWatcher b(std::move(a));
  EXPECT_EQ(b.fd(), fd);
  EXPECT_EQ(b.path(), file_.string());
  EXPECT_FALSE(a.waitForChange(0ms));  // NOLINT(bugprone-use-after-move): moved-from is inert
  FileWatcher c = make();
  c = std::move(b);
  EXPECT_EQ(c.fd(), fd);
  writeFile(file_, "services: []\n");
  EXPECT_TRUE(c.waitForChange(kChangeTimeout));
}

TEST_F(FileWatcherTest, DestructorClosesFd) {
  int fd = -1;
  {
    FileWatcher w = make();
    fd = w.fd();
    ASSERT_GE(fd, 0);
  }
  errno = 0;
  EXPECT_EQ(fcntl(fd, F_GETFD), -1);
  EXPECT_EQ(errno, EBADF);
}

TEST_F(FileWatcherTest, MissingParentDirectoryFails) {
  auto w = FileWatcher::create((fs::path(dir_.path()) / "no-such-dir" / "state.yaml").string());
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.error().code, ENOENT);
  EXPECT_NE(w.error().context.find("no-such-dir"), std::string::npos) << w.error().message();
}

TEST_F(FileWatcherTest, DirectoryPathFails) {
  auto w = FileWatcher::create(dir_.path() + "/");
  EXPECT_FALSE(w.ok());
}

}  // namespace
}  // namespace aimesh
