#include "source/file_watcher.h"

#include <poll.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <cerrno>
#include <string_view>
#include <utility>

namespace aimesh {
namespace {

// Maximum time to keep debouncing a file that is written continuously, so a
// busy writer cannot starve the caller.
constexpr std::chrono::milliseconds kMaxDebounce{1000};

// CLOSE_WRITE: an in-place save finished. MOVED_TO: a temp file renamed over
// ours (atomic save). CREATE/DELETE/MOVED_FROM: the file appeared or went away.
// MODIFY: a writer that keeps the file open (debounced away otherwise).
constexpr uint32_t kMask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_MODIFY |
                           IN_ATTRIB | IN_ONLYDIR;

// Kubernetes ConfigMap volumes publish updates by renaming this symlink.
constexpr const char* kConfigMapDataLink = "..data";

// Returns poll()'s result: >0 readable, 0 timeout, <0 error (not EINTR).
int pollFor(int fd, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() < 0) left = std::chrono::milliseconds{0};
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r >= 0 || errno != EINTR) return r;
  }
}

}  // namespace

Result<FileWatcher> FileWatcher::create(std::string path) {
  if (path.empty()) return Error::msg("watch file: empty path");
  std::string dir;
  std::string name;
  auto slash = path.rfind('/');
  if (slash == std::string::npos) {
    dir = ".";
    name = path;
  } else {
    dir = slash == 0 ? "/" : path.substr(0, slash);
    name = path.substr(slash + 1);
  }
  if (name.empty()) return Error::msg("watch " + path + ": path names a directory, not a file");

  int fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0) return Error::fromErrno("inotify_init1");
  if (::inotify_add_watch(fd, dir.c_str(), kMask) < 0) {
    Error err = Error::fromErrno("inotify_add_watch " + dir);
    ::close(fd);
    return err;
  }
  return FileWatcher(fd, std::move(path), std::move(dir), std::move(name));
}

FileWatcher::FileWatcher(int fd, std::string path, std::string dir, std::string name)
    : fd_(fd), path_(std::move(path)), dir_(std::move(dir)), name_(std::move(name)) {}

FileWatcher::FileWatcher(FileWatcher&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      path_(std::move(other.path_)),
      dir_(std::move(other.dir_)),
      name_(std::move(other.name_)) {}

FileWatcher& FileWatcher::operator=(FileWatcher&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    path_ = std::move(other.path_);
    dir_ = std::move(other.dir_);
    name_ = std::move(other.name_);
  }
  return *this;
}

FileWatcher::~FileWatcher() {
  if (fd_ >= 0) ::close(fd_);
}

FileWatcher::Drained FileWatcher::drain() {
  Drained out;
  // Aligned as inotify(7) asks; big enough for many events per read.
  alignas(inotify_event) char buf[16 * (sizeof(inotify_event) + 256)];
  for (;;) {
    ssize_t n = ::read(fd_, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      break;  // EAGAIN: queue empty
    }
    if (n == 0) break;
    for (char* p = buf; p < buf + n;) {
      auto* ev = reinterpret_cast<inotify_event*>(p);
      p += sizeof(inotify_event) + ev->len;
      if (ev->mask & (IN_Q_OVERFLOW | IN_IGNORED)) {
        // Events were lost, or the directory itself went away: we cannot
        // know, so say "changed" and let the caller re-read.
        out.changed = true;
        out.settled = false;
        continue;
      }
      if (ev->len == 0) continue;
      std::string_view evName(ev->name);  // NUL-padded to len
      if (evName != name_ && evName != kConfigMapDataLink) continue;
      out.changed = true;
      // A rename onto the name (an atomic save, a ConfigMap update) or the
      // close of a write leaves a whole file; anything else may be mid-save.
      out.settled = (ev->mask & (IN_MOVED_TO | IN_CLOSE_WRITE)) != 0 ||
                    (evName == kConfigMapDataLink && (ev->mask & IN_CREATE));
    }
  }
  return out;
}

bool FileWatcher::waitForChange(std::chrono::milliseconds timeout) {
  if (fd_ < 0) return false;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  bool changed = false, settled = false;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() < 0) left = std::chrono::milliseconds{0};
    if (pollFor(fd_, left) <= 0) return false;
    Drained d = drain();
    if (d.changed) {
      changed = true;
      settled = d.settled;
      break;
    }
    if (std::chrono::steady_clock::now() >= deadline) return false;
  }
  // Debounce a save that may still be under way: keep swallowing events
  // until one leaves a whole file, or the writer has been quiet for
  // kDebounce (bounded by kMaxDebounce). A finished save is reported at once.
  auto debounceEnd = std::chrono::steady_clock::now() + kMaxDebounce;
  while (!settled && std::chrono::steady_clock::now() < debounceEnd) {
    if (pollFor(fd_, kDebounce) <= 0) break;
    Drained d = drain();
    if (d.changed) settled = d.settled;
  }
  return changed;
}

}  // namespace aimesh
