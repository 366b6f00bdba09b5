// FileWatcher: tells the agent when its state file changed, using inotify.
//
// The watch is on the parent directory, not the file: editors (vim, sed -i,
// `kubectl cp`, atomic writers) replace a file by writing a temporary and
// renaming it over the original, which would leave a watch on the old inode
// blind. Events are filtered by file name. Kubernetes ConfigMap volumes swap
// a "..data" symlink instead of touching the file; that counts as a change too.
// Reading and parsing the file is not done here (see state_file.h).
#pragma once

#include <chrono>
#include <string>

#include "util/result.h"

namespace aimesh {

class FileWatcher {
 public:
  // One editor save produces several events (create, modify, close, rename);
  // events closer together than this are one change.
  static constexpr std::chrono::milliseconds kDebounce{50};

  // The parent directory must exist; the file itself need not (yet).
  static Result<FileWatcher> create(std::string path);

  FileWatcher(FileWatcher&& other) noexcept;
  FileWatcher& operator=(FileWatcher&& other) noexcept;
  FileWatcher(const FileWatcher&) = delete;
  FileWatcher& operator=(const FileWatcher&) = delete;
  ~FileWatcher();

  // The inotify fd, non-blocking: readable when events are pending. For an
  // outer poll loop; call waitForChange() (a zero timeout is fine) to consume.
  int fd() const { return fd_; }
  const std::string& path() const { return path_; }

  // Waits up to `timeout` for the file to change. Returns true if it changed
  // (created, written, replaced, removed), after draining all pending events.
  // A save that left a whole file (renamed onto the name, or closed after
  // writing) is reported at once; otherwise it waits until events have been
  // quiet for kDebounce, so one save is reported once. Returns false on timeout or if only other files changed.
  bool waitForChange(std::chrono::milliseconds timeout);

 private:
  FileWatcher(int fd, std::string path, std::string dir, std::string name);

  // Reads every queued event: whether any concerned our file, and whether
  // the last that did left a whole file (a rename onto it, a close after
  // writing).
  struct Drained {
    bool changed = false;
    bool settled = false;
  };
  Drained drain();

  int fd_ = -1;
  std::string path_;
  std::string dir_;
  std::string name_;
};

}  // namespace aimesh
