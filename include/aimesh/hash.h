/* Hashing shared by the BPF programs and the agent: both must map a key to
 * the same table entry. Pure integer arithmetic, no libc, C and C++. */
#ifndef AIMESH_HASH_H
#define AIMESH_HASH_H

#include <linux/types.h>

/* The 64-bit finalizer of MurmurHash3 (fmix64): every input bit affects
 * every output bit, so consecutive cgroup ids spread over the table. */
static inline __u64 aimesh_mix64(__u64 k)
{
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdULL;
	k ^= k >> 33;
	k *= 0xc4ceb9fe1a85ec53ULL;
	k ^= k >> 33;
	return k;
}

/* Table entry for a client workload (its cgroup id) in a maglev or
 * bounded_hash table of `size` entries (size > 0). */
static inline __u32 aimesh_hash_slot(__u64 key, __u32 size)
{
	return (__u32)(aimesh_mix64(key) % size);
}

#endif /* AIMESH_HASH_H */
