// bpf/lib/timed.h compiled for the host: the slot of a socket in
// aimesh_timed. sock_ops and the payload programs must agree on it (the e2e
// test TelemetryE2e.TimedSocketsAreCountedInTheirTupleSlotWhileOpen checks
// that on real sockets); here, that slots stay in range and that the
// sockets one client opens to one endpoint (consecutive ephemeral ports)
// spread over distinct slots, so an untimed socket rarely shares a slot
// with a timed one and pays for a storage lookup.
#include <linux/types.h>

#include <gtest/gtest.h>

#include <cstdint>
#include <set>

#include "lib/timed.h"

namespace {

TEST(TimedSlot, InRangeAndAFunctionOfTheTupleOnly) {
  for (uint32_t port = 1; port < 65536; port += 97) {
    uint32_t s = timed_slot(static_cast<__u16>(port), 8000, 0x0200a8c0);
    EXPECT_LT(s, AIMESH_TIMED_SLOTS);
    EXPECT_EQ(s, timed_slot(static_cast<__u16>(port), 8000, 0x0200a8c0));
  }
}

TEST(TimedSlot, OneClientsEphemeralPortsToOneEndpointSpread) {
  std::set<uint32_t> slots;
  for (uint32_t port = 32768; port < 32768 + 4096; ++port)
    slots.insert(timed_slot(static_cast<__u16>(port), 8000, 0x02004d0a));
  EXPECT_EQ(slots.size(), 4096u) << "consecutive local ports collide";
}

TEST(TimedSlot, TheSamePortToDifferentEndpointsDiffers) {
  std::set<uint32_t> slots;
  for (uint32_t host = 1; host <= 256; ++host) slots.insert(timed_slot(40000, 8000, 0x00004d0a | (host << 24)));
  EXPECT_GE(slots.size(), 250u);
}

}  // namespace
