// SPDX-License-Identifier: GPL-2.0
/* Test-only object: runs the lifecycle decision (lib/lifecycle.h) under
 * BPF_PROG_TEST_RUN on a socket state and kernel-socket view the test
 * writes, since iterators cannot be test-run on made-up sockets. Nothing is
 * destroyed; the verdict is returned in the context. */
#include "lib/lifecycle.h"

SEC("syscall")
int aimesh_lc_decide(struct aimesh_lc_test_ctx *ctx)
{
	struct aimesh_lc_ctl *ctl = lc_ctl();
	struct aimesh_backend *be = 0;
	struct lc_view v = {};
	__u8 state;
	int gone;

	if (!ctl)
		return 1;
	__builtin_memcpy(v.daddr, ctx->daddr, 16);
	v.dport = ctx->dport;
	v.tcp_state = ctx->tcp_state;
	v.unacked = ctx->unacked;
	v.unread = ctx->unread;
	ctx->gone = 0;
	ctx->closed = 0;
	ctx->state = 0xff; /* not ours */
	if (!lc_ours(&ctx->sock, &v))
		return 0;
	state = lc_state(&ctx->sock, &v, ctx->now_ns, ctl);
	gone = lc_gone(&ctx->sock, &be);
	ctx->state = state;
	ctx->gone = gone;
	if (ctl->flags & AIMESH_LC_F_ACT)
		ctx->closed = lc_decide(&ctx->sock, state, gone, be, ctx->now_ns, ctl);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
