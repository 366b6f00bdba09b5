// SPDX-License-Identifier: GPL-2.0
/* Test-only object: runs the real selection code (lib/lb.h) under
 * BPF_PROG_TEST_RUN, which socket hooks do not support. The test fills the
 * maps through the skeleton and passes a struct aimesh_select_ctx. */
#include "lib/lb.h"
#include "lib/hist.h"

SEC("syscall")
int aimesh_select(struct aimesh_select_ctx *ctx)
{
	struct aimesh_backend *be = 0;
	__u32 id = 0, target = 0;

	ctx->err = lb_select(ctx->service_id, ctx->rnd, ctx->hash_key, ctx->family, &id, &be, &target, 0);
	ctx->backend_id = id;
	ctx->target_id = target;
	return 0;
}

SEC("syscall")
int aimesh_hist_bucket(struct aimesh_hist_ctx *ctx)
{
	ctx->bucket = hist_bucket(ctx->ns);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
