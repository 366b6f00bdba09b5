// StateSource: where the agent's desired cluster state comes from. Both the
// state file and the Kubernetes API yield a Snapshot; the agent's loop asks
// its source for the next one and reconciles it, whatever the source is.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "model/snapshot.h"
#include "source/file_watcher.h"
#include "source/state_file.h"

namespace aimesh {

// One new state from a source: a snapshot to apply, or the errors that made
// the source reject it (the last good state then stays in force).
struct StateUpdate {
  std::optional<Snapshot> snapshot;
  std::vector<std::string> errors;    // rejected: each names where and what ("state.yaml:3:5: ...")
  std::vector<std::string> warnings;  // applied, but parts were left out (each names the object)
  bool ok() const { return snapshot.has_value(); }
};

class StateSource {
 public:
  virtual ~StateSource() = default;
  // The state as it is now, read at once (the first apply, or a forced
  // reload); nothing if the source has none yet (Kubernetes before its sync).
  virtual std::optional<StateUpdate> current() = 0;
  // Waits up to `timeout` for the state to change; the new state, or nothing.
  virtual std::optional<StateUpdate> next(std::chrono::milliseconds timeout) = 0;
  // "file /etc/aimesh/state.yaml", "kubernetes https://10.0.0.1:443".
  virtual std::string describe() const = 0;
};

// The YAML state file (state_file.h), watched with inotify. A file that
// cannot be watched (no parent directory yet) is still read by current().
class StateFileSource final : public StateSource {
 public:
  explicit StateFileSource(std::string path);
  std::optional<StateUpdate> current() override;
  std::optional<StateUpdate> next(std::chrono::milliseconds timeout) override;
  std::string describe() const override { return "file " + path_; }

 private:
  std::string path_;
  std::optional<FileWatcher> watcher_;
  StateFileCache cache_;  // the last read's services by item, for the next read
};

}  // namespace aimesh
