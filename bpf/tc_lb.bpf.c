// SPDX-License-Identifier: GPL-2.0
/* TC ingress L4 load balancing for traffic that does not start in a local
 * socket (other nodes, node ports, workloads outside the cgroup hooks): the
 * entry point, which turns what the helpers found into a verdict. The work is
 * in lib/nat.h (parsing, rewriting), lib/conntrack.h (the flow table) and
 * lib/lb.h (selection, shared with the socket path).
 *
 * A packet of a known flow is rewritten as its aimesh_ct entry says: the
 * forward entry's destination becomes the backend, the reply entry's source
 * the service address. A packet to a service frontend starts a flow (both
 * entries) and is rewritten the same way. Everything else passes untouched. */
#include "lib/conntrack.h"

SEC("tc")
int aimesh_tc_ingress(struct __sk_buff *skb)
{
	struct aimesh_frontend_key fk = {};
	struct aimesh_frontend *fe;
	struct aimesh_ct *ct, fresh;
	struct nat_flow f;
	__u64 now;
	int r;

	r = nat_parse(skb, &f);
	if (r != NAT_OK) {
		if (r == NAT_FRAGMENT)
			count_reason(AIMESH_R_TC_FRAGMENT);
		else if (r == NAT_MALFORMED)
			count_reason(AIMESH_R_TC_MALFORMED);
		return TC_ACT_OK;
	}

	now = bpf_ktime_get_ns();
	ct = ct_lookup(&f, now);
	if (ct) {
		__builtin_memcpy(fresh.addr, ct->addr, 16);
		fresh.port = ct->port;
		fresh.dir = ct->dir;
		fresh.flags = ct->flags;
		if (nat_rewrite(skb, &f, fresh.dir == AIMESH_CT_FORWARD, fresh.addr, fresh.port)) {
			count_reason(AIMESH_R_TC_REWRITE_FAILED); /* never send half a rewrite */
			return TC_ACT_SHOT;
		}
		if (fresh.dir == AIMESH_CT_REPLY && (fresh.flags & AIMESH_CTF_LOCAL)) {
			/* From a node address now: straight to the client's interface. */
			__u32 ifindex = 0;
			long rc = aimesh_ct_fib(skb, &f, &fresh, &ifindex);

			if (rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH)
				return bpf_redirect_neigh(ifindex, 0, 0, 0);
		}
		return TC_ACT_OK;
	}

	/* Not a known flow: a new one only if it is addressed to a service. */
	__builtin_memcpy(fk.addr, f.key.daddr, 16);
	fk.port = f.key.dport;
	fk.proto = f.key.proto;
	fe = bpf_map_lookup_elem(&aimesh_frontends, &fk);
	if (!fe)
		return TC_ACT_OK;
	r = ct_create(skb, &f, fe->service_id, now, &fresh);
	if (r != CT_CREATED) {
		if (r == CT_NO_BACKEND)
			count_reason(AIMESH_R_TC_NO_BACKEND);
		return TC_ACT_SHOT;
	}
	if (nat_rewrite(skb, &f, 1, fresh.addr, fresh.port)) {
		count_reason(AIMESH_R_TC_REWRITE_FAILED);
		return TC_ACT_SHOT;
	}
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
