// SPDX-License-Identifier: GPL-2.0
/* Socket-level load balancer: thin entry points for the cgroup sock_addr
 * hooks. The work is in lib/sock.h (translation) and lib/lb.h (selection). */
#include "lib/sock.h"

SEC("cgroup/connect4")
int aimesh_connect4(struct bpf_sock_addr *ctx) { return sock_forward(ctx, AIMESH_FAMILY_V4, 1); }

SEC("cgroup/connect6")
int aimesh_connect6(struct bpf_sock_addr *ctx) { return sock_forward(ctx, AIMESH_FAMILY_V6, 1); }

SEC("cgroup/sendmsg4")
int aimesh_sendmsg4(struct bpf_sock_addr *ctx) { return sock_forward(ctx, AIMESH_FAMILY_V4, 0); }

SEC("cgroup/sendmsg6")
int aimesh_sendmsg6(struct bpf_sock_addr *ctx) { return sock_forward(ctx, AIMESH_FAMILY_V6, 0); }

SEC("cgroup/recvmsg4")
int aimesh_recvmsg4(struct bpf_sock_addr *ctx) { return sock_reverse(ctx, AIMESH_FAMILY_V4); }

SEC("cgroup/recvmsg6")
int aimesh_recvmsg6(struct bpf_sock_addr *ctx) { return sock_reverse(ctx, AIMESH_FAMILY_V6); }

SEC("cgroup/getpeername4")
int aimesh_getpeer4(struct bpf_sock_addr *ctx) { return sock_reverse(ctx, AIMESH_FAMILY_V4); }

SEC("cgroup/getpeername6")
int aimesh_getpeer6(struct bpf_sock_addr *ctx) { return sock_reverse(ctx, AIMESH_FAMILY_V6); }

char LICENSE[] SEC("license") = "GPL";
