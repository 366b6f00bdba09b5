/* The few kernel structures the lifecycle iterators read, declared with only
 * the members they use. preserve_access_index makes every access a CO-RE
 * relocation that libbpf resolves against the running kernel's BTF at load,
 * so the real layout never has to be known here (no vmlinux.h, no build-time
 * dependency on the build machine's kernel). Names must match the kernel's. */
#ifndef AIMESH_BPF_KERNEL_H
#define AIMESH_BPF_KERNEL_H

#include <linux/in6.h>

#include "lib/common.h"

#define AIMESH_AF_INET 2
#define AIMESH_AF_INET6 10
#define AIMESH_TCP_ESTABLISHED 1

struct seq_file;

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	volatile unsigned char skc_state;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
	struct {
		int len;
	} sk_backlog;
} __attribute__((preserve_access_index));

struct tcp_sock {
	__u32 copied_seq;
	__u32 write_seq;
	__u32 rcv_nxt;
	__u32 snd_una;
} __attribute__((preserve_access_index));

struct udp_sock {
} __attribute__((preserve_access_index));

struct bpf_iter_meta {
	struct seq_file *seq;
	__u64 session_id;
	__u64 seq_num;
} __attribute__((preserve_access_index));

struct bpf_iter__tcp {
	struct bpf_iter_meta *meta;
	struct sock_common *sk_common;
	__u32 uid;
} __attribute__((preserve_access_index));

struct bpf_iter__udp {
	struct bpf_iter_meta *meta;
	struct udp_sock *udp_sk;
	__u32 uid;
	int bucket;
} __attribute__((preserve_access_index));

#endif
