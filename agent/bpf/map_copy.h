// Copying a BPF map's entries into a map of another size: the resize of a
// pinned map when the agent restarts with other --max-* limits (datapath.cc
// creates the new map, copies, and re-pins it before the programs that use it
// are swapped in).
#pragma once

#include <cstdint>
#include <string>

#include "util/result.h"

namespace aimesh {

// Copies every entry of map `from` into map `to`: the same type, key and
// value size, any max_entries. Arrays copy the indices both have that are not
// all zeros (the new map starts zeroed); what lies past the new size is
// dropped. Hash maps copy every key, and fail if `to` cannot hold them. A
// map-in-map's values (inner map ids) are passed on as the inner maps
// themselves. With `keyLimit`, a hash map whose 4-byte key (an id) is at or
// above it cannot be copied: the arrays indexed by that id would not reach it.
// `what` names the map in errors. Returns how many entries were copied.
Result<uint64_t> copyMapEntries(int from, int to, const std::string& what, uint32_t keyLimit = 0);

}  // namespace aimesh
