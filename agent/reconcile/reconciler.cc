#include "reconcile/reconciler.h"

#include <fmt/format.h>

namespace aimesh {
namespace {
// Pinned maps keep their size (docs/operations.md, "Changing the sizes").
constexpr const char* kResizeNote = "; a running data plane is resized with aimesh-agent --cleanup, then a start";
}  // namespace

Result<ReconcileReport> Reconciler::reconcile(const Snapshot& desired, IdIndex& index, Verify verify) {
  auto start = std::chrono::steady_clock::now();
  if (verify == Verify::kRead || !known_) {
    known_.reset();
    auto read = writer_.read();
    if (!read) return read.error();
    known_ = std::move(read.value());
  }
  KernelState current = std::move(*known_);
  known_.reset();  // until this run succeeds: a failed one leaves the kernel between the two
  Plan plan = makePlan(desired, current, limits_);

  size_t wanted = 0;
  for (auto& s : desired.services) wanted += s.ports.size();
  if (plan.index.services.size() != wanted) {
    known_ = std::move(current);  // nothing applied
    return Error::msg(fmt::format("out of service ids: {} of {} service ports fit (limit {}; raise --max-services, "
                                  "e.g. --max-services {}{})",
                                  plan.index.services.size(), wanted, limits_.services - 1, suggestedLimit(wanted),
                                  kResizeNote));
  }
  size_t wantedBe = 0;
  for (auto& s : desired.services) wantedBe += s.ports.size() * s.endpoints.size();
  if (plan.index.backends.size() != wantedBe) {
    known_ = std::move(current);
    return Error::msg(fmt::format("out of backend ids: {} of {} endpoints (per service port) fit (limit {}; raise "
                                  "--max-backends, e.g. --max-backends {}{})",
                                  plan.index.backends.size(), wantedBe, limits_.backends - 1,
                                  suggestedLimit(wantedBe), kResizeNote));
  }

  auto ops = diff(current, plan.desired, plan.newServiceIds, plan.newBackendIds);
  if (Status st = writer_.applyAll(ops); !st) return st.error();
  index = std::move(plan.index);
  known_ = std::move(plan.desired);
  return ReconcileReport{ops.size(), std::chrono::steady_clock::now() - start};
}

}  // namespace aimesh
