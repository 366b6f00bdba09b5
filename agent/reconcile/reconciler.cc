#include "reconcile/reconciler.h"

#include <fmt/format.h>

namespace aimesh {
namespace {
// Pinned maps keep their size (docs/operations.md, "Changing the sizes").
constexpr const char* kResizeNote = "; a running data plane is resized with aimesh-agent --cleanup, then a start";
}  // namespace

Result<ReconcileReport> Reconciler::reconcile(const Snapshot& desired, IdIndex& index) {
  auto start = std::chrono::steady_clock::now();
  auto current = writer_.read();
  if (!current) return current.error();
  Plan plan = makePlan(desired, current.value(), limits_);

  size_t wanted = 0;
  for (auto& s : desired.services) wanted += s.ports.size();
  if (plan.index.services.size() != wanted)
    return Error::msg(fmt::format("out of service ids: {} of {} service ports fit (limit {}; raise --max-services, "
                                  "e.g. --max-services {}{})",
                                  plan.index.services.size(), wanted, limits_.services - 1, suggestedLimit(wanted),
                                  kResizeNote));
  size_t wantedBe = 0;
  for (auto& s : desired.services) wantedBe += s.ports.size() * s.endpoints.size();
  if (plan.index.backends.size() != wantedBe)
    return Error::msg(fmt::format("out of backend ids: {} of {} endpoints (per service port) fit (limit {}; raise "
                                  "--max-backends, e.g. --max-backends {}{})",
                                  plan.index.backends.size(), wantedBe, limits_.backends - 1,
                                  suggestedLimit(wantedBe), kResizeNote));

  auto ops = diff(current.value(), plan.desired, plan.newServiceIds, plan.newBackendIds);
  for (auto& op : ops) {
    auto st = writer_.apply(op);
    if (!st) return Error{st.error().code, describe(op) + ": " + st.error().context};
  }
  index = std::move(plan.index);
  return ReconcileReport{ops.size(), std::chrono::steady_clock::now() - start};
}

}  // namespace aimesh
