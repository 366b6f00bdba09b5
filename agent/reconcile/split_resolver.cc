#include "reconcile/split_resolver.h"

#include <algorithm>

namespace aimesh {

std::vector<UnresolvedSplitBackend> resolveSplits(Snapshot& snap) {
  std::vector<UnresolvedSplitBackend> missing;
  SharedServices& services = snap.services;
  std::vector<size_t> splits;
  for (size_t i = 0; i < services.size(); ++i)
    if (!services[i].split.empty()) splits.push_back(i);
  if (splits.empty()) return missing;
  const bool sorted = services.sortedByKey();
  for (size_t i : splits) {
    const Service& split = services[i];
    std::vector<SplitBackend> resolved = split.split;
    for (SplitBackend& b : resolved) {
      const Service* target =
          services.find(b.nameSpace.empty() ? split.nameSpace : b.nameSpace, b.service, sorted);
      b.vip.reset();
      b.ports.clear();
      std::string reason;
      if (!target) reason = "no such service";
      else if (!target->split.empty()) reason = "it is a split itself (splits of splits are not followed)";
      else if (target->vips.empty()) reason = "it has no address";
      if (!reason.empty()) {
        missing.push_back({split.key(), (b.nameSpace.empty() ? split.nameSpace : b.nameSpace) + "/" + b.service,
                           reason});
        continue;
      }
      b.vip = target->vips.front();
      b.ports = target->ports;
    }
    if (resolved != split.split) services.mut(i).split = std::move(resolved);
  }
  return missing;
}

}  // namespace aimesh
