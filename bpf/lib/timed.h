/* Which sockets' requests are timed, answered without their socket storage.
 *
 * The payload programs (sock_telemetry.bpf.c) run for every TCP segment of
 * every socket in the cgroup, most of them not timed: not connected through
 * a service, or not sampled (aimesh_service.sample_skip). Looking up a
 * socket's storage costs dependent loads from lines nothing else on the
 * segment's path touches; this filter costs one load from a small array.
 *
 * sock_ops counts a socket into aimesh_timed[slot] when it is established
 * and sampled, and out of it when it closes; slot is a hash of the socket's
 * local port, remote port and the last 32 bits of its remote address, which
 * every segment carries in its headers. A zero slot proves the segment's
 * socket is not timed. A non-zero one may belong to another socket with the
 * same hash: the storage lookup then decides, as before.
 *
 * Compiles for the host too (tests), as a pure function. */
#ifndef AIMESH_BPF_TIMED_H
#define AIMESH_BPF_TIMED_H

#include "aimesh/abi.h"

/* Ports in host byte order; remote_ip32 as the last four bytes of the
 * remote address read with a native load (IPv4, or the IPv4 of an
 * IPv4-mapped IPv6 address, as the wire carries it). */
static inline __u32 timed_slot(__u16 local_port, __u16 remote_port, __u32 remote_ip32)
{
	__u32 h = (((__u32)local_port << 16) | remote_port) ^ remote_ip32;

	return (h * 0x9E3779B1u) >> (32 - AIMESH_TIMED_BITS);
}

#endif
