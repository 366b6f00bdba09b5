#include "view/views.h"

#include <limits>

namespace aimesh::view {

void to_json(nlohmann::json& j, const Bucket& b) { j = nlohmann::json::array({b.lower, b.upper, b.count}); }

void from_json(const nlohmann::json& j, Bucket& b) {
  if (!j.is_array() || j.size() != 3)
    throw nlohmann::json::type_error::create(302, "a bucket is [lower, upper, count]", &j);
  // A null upper bound is the open-ended overflow bucket (JSON has no infinity).
  double upper = j[1].is_null() ? std::numeric_limits<double>::infinity() : j[1].get<double>();
  b = Bucket{j[0].get<double>(), upper, j[2].get<uint64_t>()};
}

}  // namespace aimesh::view
