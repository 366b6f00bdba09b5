/* Workload policy at connect/sendmsg: a service with AIMESH_SVC_F_POLICY
 * admits only clients whose cgroup, or an ancestor of it, is allowed in
 * aimesh_policy. A container's processes live in child cgroups of their
 * pod's cgroup, so allowing the pod's cgroup allows them all. Services
 * without the flag cost one array lookup here. */
#ifndef AIMESH_BPF_POLICY_H
#define AIMESH_BPF_POLICY_H

#include "lib/maps.h"

/* 1 if the calling process may use service svc_id. */
static __always_inline int policy_allows(__u32 svc_id)
{
	struct aimesh_policy_key k = { .service_id = svc_id };
	struct aimesh_service *svc = bpf_map_lookup_elem(&aimesh_services, &svc_id);
	struct aimesh_policy *p;
	__u64 id;
	int level;

	if (!svc || !(svc->flags & AIMESH_SVC_F_POLICY))
		return 1;
	/* Level 1 is the child of the root; past the caller's own depth the
	 * helper returns 0. */
	for (level = 1; level <= AIMESH_POLICY_MAX_DEPTH; level++) {
		id = bpf_get_current_ancestor_cgroup_id(level);
		if (!id)
			break;
		k.cgroup_id = id;
		p = bpf_map_lookup_elem(&aimesh_policy, &k);
		if (p && p->allow)
			return 1;
	}
	return 0;
}

#endif
