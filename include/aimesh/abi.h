/* SPDX-License-Identifier: Apache-2.0
 *
 * aimesh ABI: every key, value, enum and limit that the BPF programs and the
 * C++ agent both see. This is the only copy; it compiles under
 * `clang -target bpf` and `g++ -std=c++20`.
 *
 * Rules (see docs/architecture.md): fixed-width types only, explicit padding,
 * no bitfields, bools, enum-typed fields or pointers; every struct has its
 * size and key offsets asserted. Hash keys compare raw bytes, so callers
 * zero-initialise keys (padding included).
 *
 * What does not live here: map definitions (bpf/lib/maps.h; the TC path's
 * aimesh_ct in bpf/lib/conntrack.h) and agent-side value types (agent/model/).
 */
#ifndef AIMESH_ABI_H
#define AIMESH_ABI_H

#include <linux/types.h>

#ifdef __cplusplus
#define AIMESH_STATIC_ASSERT static_assert
#else
#define AIMESH_STATIC_ASSERT _Static_assert
#endif
#define AIMESH_OFFSETOF(t, f) __builtin_offsetof(t, f)

/* ---- limits ------------------------------------------------------------ */

/* Ids are dense and start at 1; 0 means "none". */
#define AIMESH_MAX_SERVICES 4096
#define AIMESH_MAX_BACKENDS 16384
#define AIMESH_MAX_FRONTENDS 16384
/* Weighted slots per service and generation. Weights are expanded into this
 * many slots (scaled down proportionally when they do not fit). */
#define AIMESH_MAX_SLOTS_PER_SVC 1024
/* Two generations of slots per service, so a new slot set is written beside
 * the live one and switched in with one update of the service record. */
#define AIMESH_MAX_SLOTS (AIMESH_MAX_SERVICES * 32)
#define AIMESH_MAX_REVNAT 65536
/* Random picks tried before a service is declared to have no usable backend
 * (a pick can hit a backend that was drained a moment ago). */
#define AIMESH_SELECT_TRIES 4
/* least_conn / latency compare every backend of a service with at most this
 * many slots (exact least-loaded), two random ones beyond (power of two). */
#define AIMESH_LB_SCAN_MAX 16
/* A split (lib/lb.h) sends each new connection to one of at most this many
 * backend services, by weight; a weight is at most AIMESH_SPLIT_MAX_WEIGHT
 * (Gateway API's bound), so the sum fits 32 bits. */
#define AIMESH_SPLIT_MAX 16
#define AIMESH_SPLIT_MAX_WEIGHT 1000000

#define AIMESH_PROTO_TCP 6
#define AIMESH_PROTO_UDP 17

#define AIMESH_FAMILY_V4 4
#define AIMESH_FAMILY_V6 6

/* ---- enums (stored in __u8 fields) ---------------------------------------- */

enum aimesh_algorithm {
	AIMESH_ALG_RANDOM = 0,
	AIMESH_ALG_MAGLEV = 1,
	AIMESH_ALG_LEAST_CONN = 2,
	AIMESH_ALG_LATENCY = 3,
	AIMESH_ALG_BOUNDED_HASH = 4,
	AIMESH_ALG_MAX,
};

enum aimesh_backend_state {
	AIMESH_BE_ACTIVE = 0,
	AIMESH_BE_DRAINING = 1,
	AIMESH_BE_TERMINATING = 2,
	AIMESH_BE_STATE_MAX,
};

/* Why the data plane refused, skipped or could not record something.
 * Indexes the per-CPU aimesh_reasons array. Keep reasonName() in
 * agent/telemetry/stats.cc and docs/metrics.md in step. */
enum aimesh_reason {
	AIMESH_R_NO_BACKEND = 0,       /* service has no usable backend: ECONNREFUSED */
	AIMESH_R_SERVICE_MISSING = 1,  /* frontend names a service id with no record */
	AIMESH_R_SLOT_MISSING = 2,     /* slot lookup failed (update in flight) */
	AIMESH_R_BACKEND_MISSING = 3,  /* slot names a backend with no record */
	AIMESH_R_BACKEND_INACTIVE = 4, /* picked a draining/terminating backend, retried */
	AIMESH_R_FAMILY_MISMATCH = 5,  /* picked a backend of a family the call cannot use, retried */
	AIMESH_R_REVNAT_FAILED = 6,    /* could not record the reverse translation */
	AIMESH_R_SOCK_STORAGE_FAILED = 7, /* no per-socket state: connection not measured */
	AIMESH_R_HIST_FULL = 8,        /* no histogram could be created (map full, no memory): sample dropped */
	AIMESH_R_EVENT_DROPPED = 9,    /* events ring buffer full */
	AIMESH_R_EJECTED_SKIPPED = 10, /* picked a backend in its failure back-off, picked again */
	AIMESH_R_EJECTED_FALLBACK = 11, /* every pick was in back-off: used one anyway (fail open) */
	AIMESH_R_HASH_TABLE_MISS = 12, /* maglev/bounded_hash: no table, or no usable entry in reach: random pick */
	AIMESH_R_TC_FRAGMENT = 13,     /* TC: an IP fragment, passed untouched */
	AIMESH_R_TC_MALFORMED = 14,    /* TC: truncated or malformed headers, passed untouched */
	AIMESH_R_TC_NO_BACKEND = 15,   /* TC: a new flow to a service with no usable backend: dropped */
	AIMESH_R_TC_CT_FAILED = 16,    /* TC: could not record a new flow in aimesh_ct */
	AIMESH_R_TC_REWRITE_FAILED = 17, /* TC: a checksum or store helper failed mid-rewrite: dropped */
	AIMESH_R_CLIENT_FULL = 18,     /* no aimesh_clients entry could be made (map full): the call is not counted per client */
	AIMESH_R_SPLIT_FAILOVER = 19,  /* a split's drawn backend service had no usable backend: drew among the others */
	AIMESH_R_EJECTED_REFUSED = 20, /* fail-close service: every pick was in back-off: refused */
	AIMESH_R_MAX,
};

/* ---- maps: keys and values --------------------------------------------- */

/* aimesh_frontends key: a service address. IPv4 is stored IPv4-mapped
 * (::ffff:a.b.c.d) so one key type serves both families. */
struct aimesh_frontend_key {
	__u8 addr[16];
	__be16 port;
	__u8 proto; /* AIMESH_PROTO_* */
	__u8 pad;
};
AIMESH_STATIC_ASSERT(sizeof(struct aimesh_frontend_key) == 20, "frontend_key size");
AIMESH_STATIC_ASSERT(AIMESH_OFFSETOF(struct aimesh_frontend_key, port) == 16, "frontend_key.port");
AIMESH_STATIC_ASSERT(AIMESH_OFFSETOF(struct aimesh_frontend_key, proto) == 18, "frontend_key.proto");

struct aimesh_frontend {
	__u32 service_id;
};
AIMESH_STATIC_ASSERT(sizeof(struct aimesh_frontend) == 4, "frontend size");

/* aimesh_services value. Replaced whole: the map is BPF_F_NO_PREALLOC, so an
 * update is an RCU swap and slot_gen and slot_count always change together
 * for a reader (bpf/lib/maps.h says why). */
/* aimesh_service.flags */
#define AIMESH_SVC_F_POLICY 0x01 /* only clients allowed in aimesh_policy may connect (else EPERM) */
#define AIMESH_SVC_F_SPLIT 0x02  /* a split: aimesh_splits names the backend services; no slots of its own */
#define AIMESH_SVC_F_FAIL_CLOSE 0x04 /* when every pick is in failure back-off, refuse (ECONNREFUSED)
				      * instead of using one anyway */

struct aimesh_service {
	__u32 slot_count;    /* live slots in generation slot_gen; 0 = no usable backend */
	__u32 backend_count; /* distinct active backends behind the slots */
	__u8 algorithm;      /* enum aimesh_algorithm */
	__u8 flags;          /* AIMESH_SVC_F_* */
	__u8 slot_gen;       /* 0 or 1: which half of the slot space is live */
	__u8 pad0;
	__u32 hash_size;     /* maglev/bounded_hash: entries in this service's table (a prime) */
	__u16 balance_pct;   /* bounded_hash: load bound, percent of the service average (125) */
	__u16 sample_skip;   /* telemetry sampling: a connection is measured when
			      * (random & 0xffff) >= sample_skip; 0: all of them */
};
AIMESH_STATIC_ASSERT(sizeof(struct aimesh_service) == 20, "service size");
AIMESH_STATIC_ASSERT(AIMESH_OFFSETOF(struct aimesh_service, algorithm) == 8, "service.algorithm");
AIMESH_STATIC_ASSERT(AIMESH_OFFSETOF(struct aimesh_service, slot_gen) == 10, "service.slot_gen");
AIMESH_STATIC_ASSERT(AIMESH_OFFSETOF(struct aimesh_service, hash_size) == 12, "service.hash_size");
AIMESH_STATIC_ASSERT(AIMESH_OFFSETOF(struct aimesh_service, balance_pct) == 16, "service.balance_pct");
AIMESH_STATIC_ASSERT(AIMESH_OFFSETOF(struct aimesh_service, sample_skip) == 18, "service.sample_skip");

/* aimesh_slots key. slot = slot_gen * AIMESH_MAX_SLOTS_PER_SVC + index. */
struct aimesh_slot_key {
	__u32 service_id;
	__u32 slot;
};
AIMESH_STATIC_ASSERT(sizeof(struct aimesh_slot_key) == 8, "slot_key size");

struct aimesh_slot {
	__u32 backend_id;
};
AIMESH_STATIC_ASSERT(sizeof(struct aimesh_slot) == 4, "slot size");

/* aimesh_backends value, keyed by __u32 backend id. A backend belongs to one
 * service, so per-backend counters are per (service, endpoint). */
struct aimesh_backend {
	__u8 addr[16]; /* IPv4-mapped for IPv4 */
	__be16 port;
	__u8 family;   /* AIMESH_FAMILY_V4 / _V6 */
	__u8 state;    /* enum aimesh_backend_state */
	__u32 service_id;
	__u16 weight;
	__u16 pad;
};
AIMESH_STATIC_ASSERT(sizeof(struct aimesh_backend) == 28, "backend size");
AIMESH_STATIC_ASSERT(AIMESH_OFFSETOF(struct aimesh_backend, port) == 16, "backend.port");
AIMESH_STATIC_ASSERT(AIMESH_OFFSETOF(struct aimesh_backend, state) == 19, "backend.state");
AIMESH_STATIC_ASSERT(AIMESH_OFFSETOF(struct aimesh_backend, service_id) == 20, "backend.service_id");

/* aimesh_revnat: (socket, backend address) -> service address, so that
 * getpeername() and recvmsg() on a rewritten socket report the frontend. */
struct aimesh_revnat_key {
	__u64 cookie; /* bpf_get_socket_cookie() */
	__u8 addr[16];
	__be16 port;
	__u16 pad0;
	__u32 pad1;
};
AIMESH_STATIC_ASSERT(sizeof(struct aimesh_revnat_key) == 32, "revnat_key size");
AIMESH_STATIC_ASSERT(AIMESH_OFFSETOF(struct aimesh_revnat_key, addr) == 8, "revnat_key.addr");
AIMESH_STATIC_ASSERT(AIMESH_OFFSETOF(struct aimesh_revnat_key, port) == 24, "revnat_key.port");

struct aimesh_revnat {
	__u8 addr[16];
	__be16 port;
	__u16 pad0;
	__u32 service_id;
};
AIMESH_STATIC_ASSERT(sizeof(struct aimesh_revnat) == 24, "revnat size");
AIMESH_STATIC_ASSERT(AIMESH_OFFSETOF(struct aimesh_revnat, service_id) == 20, "revnat.service_id");

/* aimesh_splits value, keyed by the split's service id (a service record
 * with AIMESH_SVC_F_SPLIT). A new connection draws a target by weight, then
 * a backend of that service with the service's own algorithm; a target with
 * no usable backend is passed over for the others. Replaced whole (a
 * BPF_F_NO_PREALLOC hash), so a reader never sees half of a weight change.
 * Targets are plain services (never splits); weight 0 takes nothing. */
struct aimesh_split_target {
	__u32 service_id;
	__u32 weight;
};
struct aimesh_split {
	__u32 count; /* targets in use */
	__u32 pad;
	struct aimesh_split_target targets[AIMESH_SPLIT_MAX];
};
AIMESH_STATIC_ASSERT(sizeof(struct aimesh_split) == 8 + 8 * AIMESH_SPLIT_MAX, "split size");
AIMESH_STATIC_ASSERT(AIMESH_OFFSETOF(struct aimesh_split, targets) == 8, "split.targets");

/* aimesh_split_stats (hash, an entry made by a split's first connection to a
 * target): what each split sent where. Atomic adds. */
struct aimesh_split_stats_key {
	__u32 split_id;  /* the split's service id */
	__u32 target_id; /* the backend service's id */
};
AIMESH_STATIC_ASSERT(sizeof(struct aimesh_split_stats_key) == 8, "split_stats_key size");
struct aimesh_split_stats {
	__u64 connects;  /* TCP connects (socket path) or new flows (TC path) */
	__u64 datagrams; /* unconnected UDP sends */
};
AIMESH_STATIC_ASSERT(sizeof(struct aimesh_split_stats) == 16, "split_stats size");

/* aimesh_svc_stats (array indexed by service id, shared by all CPUs). */
struct aimesh_svc_stats {
	__u64 connects;   /* connect() rewritten to a backend */
	__u64 datagrams;  /* unconnected sendmsg() rewritten to a backend */
	__u64 refused;    /* no usable backend: ECONNREFUSED */
	__u64 denied;     /* client not allowed by the service's policy: EPERM */
};
AIMESH_STATIC_ASSERT(sizeof(struct aimesh_svc_stats) == 32, "svc_stats size");

/* ---- workload policy (lib/policy.h) --------------------------------------
 * A service with AIMESH_SVC_F_POLICY admits a client if its cgroup or one of
 * the cgroup's ancestors (up to AIMESH_POLICY_MAX_DEPTH levels below the
 * root) has an entry here for the service. */
#define AIMESH_MAX_POLICY 65536
#define AIMESH_POLICY_MAX_DEPTH 16
struct aimesh_policy_key {
	__u64 cgroup_id;  /* cgroup v2 id (the directory's inode number) */
	__u32 service_id;
	__u32 pad;
};
AIMESH_STATIC_ASSERT(sizeof(struct aimesh_policy_key) == 16, "policy_key size");
AIMESH_STATIC_ASSERT(AIMESH_OFFSETOF(struct aimesh_policy_key, service_id) == 8, "policy_key.service_id");

struct aimesh_policy {
	__u32 allow; /* 1: allowed */
};

/* ---- who calls which service (lib/clients.h) ------------------------------
 * aimesh_clients (hash, an entry made by a client's first call to a service):
 * per (calling cgroup, service) counters, all atomic adds. The agent names
 * the cgroup (a pod, or a cgroup path), exports the top clients and folds
 * the rest into "other", and deletes entries of cgroups that are gone. */
#define AIMESH_MAX_CLIENTS 65536
struct aimesh_client_key {
	__u64 cgroup_id;  /* bpf_get_current_cgroup_id() of the caller */
	__u32 service_id;
	__u32 pad;
};
AIMESH_STATIC_ASSERT(sizeof(struct aimesh_client_key) == 16, "client_key size");
AIMESH_STATIC_ASSERT(AIMESH_OFFSETOF(struct aimesh_client_key, service_id) == 8, "client_key.service_id");

struct aimesh_client_stats {
	__u64 connects;   /* TCP connects sent to a backend */
	__u64 datagrams;  /* unconnected UDP sends sent to a backend */
	__u64 refused;    /* no usable backend: ECONNREFUSED */
	__u64 denied;     /* not allowed by the service's policy: EPERM */
	__u64 requests;   /* requests on sampled TCP connections (sock_telemetry) */
};
AIMESH_STATIC_ASSERT(sizeof(struct aimesh_client_stats) == 40, "client_stats size");
AIMESH_STATIC_ASSERT(sizeof(struct aimesh_policy) == 4, "policy size");

/* aimesh_be_stats (array indexed by backend id, shared by all CPUs). */
struct aimesh_be_stats {
	__u64 connects;
	__u64 datagrams;
};
AIMESH_STATIC_ASSERT(sizeof(struct aimesh_be_stats) == 16, "be_stats size");


/* ---- telemetry (sock_ops, cgroup_skb) ----------------------------------- */

/* Latency histograms have the buckets of Prometheus' native histograms,
 * schema 3: boundaries at 2^(i/8) seconds, 8 per power of two, each bucket
 * 9% wider than the one below, so a percentile interpolated inside one is
 * within ~4.5% of the exact value and the agent can export the kernel's own
 * buckets to Prometheus unchanged (agent/telemetry/native_histogram.h).
 * Native bucket i holds 2^((i-1)/8) s <= v < 2^(i/8) s:
 *   bucket 0                      v below 2^(MIN_INDEX/8) s (954 ns)
 *   bucket i - MIN_INDEX          MIN_INDEX < i <= MAX_INDEX
 *   bucket AIMESH_HIST_BUCKETS-1  v at or above 2^(MAX_INDEX/8) s (128 s)
 * In integers: with k = floor(log2 ns) and m = the 17 leading bits of ns
 * (2^16 <= m < 2^17), i = 8k + #{n : m >= T_n} - AIMESH_HIST_INDEX_OFFSET,
 * where T_n = ceil(2^16 x 2^((n + f)/8)), 8 x log2(1e9) = 239 + f. The
 * boundaries are then within 2^-16 of 2^(i/8) s (a nanosecond below 65 us).
 * agent/telemetry/histogram.h has the same arithmetic for the reader. */
#define AIMESH_HIST_SCHEMA 3
#define AIMESH_HIST_MIN_INDEX (-160)
#define AIMESH_HIST_MAX_INDEX 56
#define AIMESH_HIST_INDEX_OFFSET 239
#define AIMESH_HIST_T0 66560
#define AIMESH_HIST_T1 72584
#define AIMESH_HIST_T2 79153
#define AIMESH_HIST_T3 86317
#define AIMESH_HIST_T4 94130
#define AIMESH_HIST_T5 102649
#define AIMESH_HIST_T6 111939
#define AIMESH_HIST_T7 122071
#define AIMESH_HIST_MIN_NS 954ULL          /* lower bound of bucket 1 */
#define AIMESH_HIST_MAX_NS 128000720896ULL /* lower bound of the overflow bucket */
#define AIMESH_HIST_BUCKETS (AIMESH_HIST_MAX_INDEX - AIMESH_HIST_MIN_INDEX + 2)
/* Connection events ring buffer: 1 MiB holds ~14,500 events, about 200 ms
 * of two events per connection at 35,000 connections/s; the agent drains it
 * every 100 ms. */
#define AIMESH_EVENTS_BYTES (1024 * 1024)

/* What a histogram measures. Key in aimesh_hist: backend_id * AIMESH_M_MAX + metric. */
enum aimesh_metric {
	AIMESH_M_CONNECT = 0,  /* connect() hook -> TCP established */
	AIMESH_M_TTFB = 1,     /* request start -> first response payload */
	AIMESH_M_TTFT = 2,     /* request start -> first body payload (first token) */
	AIMESH_M_GAP = 3,      /* between response payload segments (inter-token) */
	AIMESH_M_DURATION = 4, /* request start -> last response payload */
	AIMESH_M_RTT = 5,      /* smoothed RTT at close */
	AIMESH_M_MAX,
};

/* aimesh_hist (hash, created by the first sample): one endpoint's histogram
 * of one metric. The sample count is the sum of the buckets (the reader adds
 * them up), so a sample costs two atomic adds, and a reader never sees a
 * count that disagrees with the buckets. */
struct aimesh_hist {
	__u64 buckets[AIMESH_HIST_BUCKETS];
	__u64 sum_ns;
};
AIMESH_STATIC_ASSERT(sizeof(struct aimesh_hist) == (AIMESH_HIST_BUCKETS + 1) * 8, "hist size");

/* aimesh_be_tel (array indexed by backend id, shared by all CPUs): lifecycle counters
 * kept by sock_ops and cgroup_skb for sockets connected through a service. */
struct aimesh_be_tel {
	__u64 opened;          /* reached ESTABLISHED */
	__u64 closed;          /* established connections that closed */
	__u64 failed_refused;  /* RST in answer to our SYN */
	__u64 failed_timeout;  /* closed in SYN_SENT without an RST */
	__u64 reset;           /* established connections ended by a received RST */
	__u64 requests;        /* request starts seen (first payload out after idle) */
	__u64 responses;       /* responses ended (next request or close) */
	__u64 chunks;          /* response payload segments */
	__u64 bytes_sent;      /* bytes acked by the peer, at close */
	__u64 bytes_received;  /* at close */
	__u64 retransmits;     /* total_retrans, at close */
	__u64 conn_ns;         /* summed established->close time */
	__u64 ejections;       /* failure back-offs started */
	/* Of `closed`, the connections aimesh itself closed, by enum
	 * aimesh_close_reason (index 0 and 7 unused). For a UDP service: its connected
	 * sockets aimesh closed (counted in `closed` too). */
	__u64 closed_by[8];
};
AIMESH_STATIC_ASSERT(sizeof(struct aimesh_be_tel) == 168, "be_tel size");
AIMESH_STATIC_ASSERT(AIMESH_OFFSETOF(struct aimesh_be_tel, closed_by) == 104, "be_tel.closed_by");

/* aimesh_be_load (array indexed by backend id): the live load and health of
 * a backend, written by the kernel only (telemetry and sock_ops), read by the
 * balancer. The agent zeroes an entry when it gives the id to a new backend. */
struct aimesh_be_load {
	__s64 active;          /* open connections (atomic add) */
	__u64 ewma_ttft_ns;    /* peak-EWMA of time to the first response body byte (TTFT); 0 = none yet */
	__u64 ewma_ts_ns;      /* when ewma_ttft_ns was last updated */
	__u64 penalty_ts_ns;   /* when penalty was last set */
	__u64 skip_until_ns;   /* in failure back-off until then (0: not ejected) */
	__u32 penalty;         /* extra virtual connections after failed connects; halves every half-life */
	__u32 fail_streak;     /* consecutive failed connects */
	__u32 ejections;       /* consecutive back-offs (the exponent of the next one) */
	__s32 idle;            /* of `active`: connections idle between requests (atomic add) */
	__u32 pad[2];
};
AIMESH_STATIC_ASSERT(sizeof(struct aimesh_be_load) == 64, "be_load size");
AIMESH_STATIC_ASSERT(AIMESH_OFFSETOF(struct aimesh_be_load, penalty) == 40, "be_load.penalty");
AIMESH_STATIC_ASSERT(AIMESH_OFFSETOF(struct aimesh_be_load, idle) == 52, "be_load.idle");

/* aimesh_svc_load (array indexed by service id): open connections over all
 * of a service's backends, for bounded_hash's average. Kernel-written. */
struct aimesh_svc_load {
	__s64 active;
};
AIMESH_STATIC_ASSERT(sizeof(struct aimesh_svc_load) == 8, "svc_load size");

/* aimesh_be_signal (array indexed by backend id): model-server signals the
 * agent scraped (vLLM-style /metrics); all zero when not scraped. */
struct aimesh_be_signal {
	__u32 queue_depth;       /* requests waiting (vllm:num_requests_waiting) */
	__u32 running;           /* requests running (vllm:num_requests_running) */
	__u32 kv_cache_permille; /* KV-cache use, 0..1000 (vllm:kv_cache_usage_perc) */
	__u32 valid;             /* 1 when the last scrape succeeded */
};
AIMESH_STATIC_ASSERT(sizeof(struct aimesh_be_signal) == 16, "be_signal size");

/* aimesh_config (one-entry array): data-plane tunables set by the agent. */
struct aimesh_config {
	__u64 ewma_tau_ns;         /* latency: peak-EWMA decay time constant */
	__u64 penalty_half_life_ns; /* failure penalty halves this often */
	__u64 eject_base_ns;       /* first back-off after eject_after failures; doubles each time */
	__u64 eject_max_ns;        /* back-off cap */
	__u32 penalty_per_failure; /* virtual connections added per failed connect */
	__u32 eject_after;         /* consecutive failures before a back-off; 0 = never */
	/* TC path: idle time before a flow is forgotten; 0 = AIMESH_CT_*_TIMEOUT_NS */
	__u64 ct_tcp_timeout_ns;
	__u64 ct_udp_timeout_ns;
	__u64 ct_closing_timeout_ns;
};
AIMESH_STATIC_ASSERT(sizeof(struct aimesh_config) == 64, "config size");

/* Defaults of struct aimesh_config (the agent's flags start from these). */
#define AIMESH_DEFAULT_EWMA_TAU_NS (10ULL * 1000 * 1000 * 1000)
#define AIMESH_DEFAULT_PENALTY_HALF_LIFE_NS (5ULL * 1000 * 1000 * 1000)
#define AIMESH_DEFAULT_EJECT_BASE_NS (1ULL * 1000 * 1000 * 1000)
#define AIMESH_DEFAULT_EJECT_MAX_NS (30ULL * 1000 * 1000 * 1000)
#define AIMESH_DEFAULT_PENALTY_PER_FAILURE 4
#define AIMESH_DEFAULT_EJECT_AFTER 3

/* maglev/bounded_hash tables: an array of maps indexed by service id; each
 * inner map is an array of hash_size backend ids. */
#define AIMESH_DEFAULT_HASH_SIZE 16381
#define AIMESH_MAX_HASH_SIZE 65521
#define AIMESH_DEFAULT_BALANCE_PCT 125
#define AIMESH_HASH_WALK 8 /* bounded_hash: table entries tried past the hashed one */

enum aimesh_sock_phase {
	AIMESH_PH_IDLE = 0,        /* no request in flight */
	AIMESH_PH_AWAIT_FIRST = 1, /* request sent, nothing back yet */
	AIMESH_PH_AWAIT_BODY = 2,  /* HTTP headers back, waiting for the first body byte */
	AIMESH_PH_STREAMING = 3,   /* body arriving */
};

/* How the response in flight ends (lib/http1.h), from its HTTP/1.x head
 * (RFC 9112, section 6.3). Without one of these the end is not seen, and the
 * response ends at the next request or at close. */
enum aimesh_framing {
	AIMESH_FR_NONE = 0,    /* not known: not HTTP/1.x, a head not parsed, or a body that ends at close */
	AIMESH_FR_LENGTH = 1,  /* Content-Length: body_left bytes to go */
	AIMESH_FR_CHUNKED = 2, /* Transfer-Encoding: chunked: chunk_st and body_left follow the chunks */
};

/* Where chunked framing is (enum values of aimesh_sock.chunk_st). */
enum aimesh_chunk_state {
	AIMESH_CH_SIZE = 0,      /* reading a chunk-size line's hex digits (body_left accumulates) */
	AIMESH_CH_EXT = 1,       /* in a chunk extension, up to the line end */
	AIMESH_CH_SIZE_LF = 2,   /* CR seen at the end of the size line */
	AIMESH_CH_DATA = 3,      /* skipping body_left bytes: chunk data and its CRLF */
	AIMESH_CH_TRAILER_BOL = 4, /* after the last chunk: at the start of a trailer line */
	AIMESH_CH_TRAILER = 5,   /* in a trailer line */
	AIMESH_CH_END_LF = 6,    /* CR of the final empty line seen */
	AIMESH_CH_DONE = 7,      /* the message is complete */
};

#define AIMESH_SKF_ESTABLISHED 0x01
#define AIMESH_SKF_RST_SEEN 0x02
#define AIMESH_SKF_H2 0x04
#define AIMESH_SKF_CLOSED 0x08
#define AIMESH_SKF_IDLE 0x10 /* counted in aimesh_be_load.idle (a response ended, no request since) */
#define AIMESH_SKF_UNSAMPLED 0x20 /* requests not timed (aimesh_service.sample_skip, decided at connect) */
#define AIMESH_SKF_TIMED 0x40 /* counted in aimesh_timed[timed_slot] (established, sampled) */

/* aimesh_timed (array of __u32): how many open sockets whose requests are
 * timed hash to each slot (lib/timed.h: the socket's local port, remote
 * port and the last 32 bits of the remote address). The payload programs
 * read it before anything else: a zero slot means the segment's socket is
 * not timed, and its socket storage is never looked up. */
#define AIMESH_TIMED_BITS 16
#define AIMESH_TIMED_SLOTS (1u << AIMESH_TIMED_BITS)

/* aimesh_sockets (SK_STORAGE): per-socket state, created by the connect hook
 * for sockets it connected to a backend (TCP, and connected UDP), read and
 * updated by sock_ops, cgroup_skb and the lifecycle iterators. Freed with the
 * socket. */
struct aimesh_sock {
	__u32 service_id;
	__u32 backend_id;
	__u64 connect_ns;
	__u64 established_ns;
	__u64 req_start_ns;
	__u64 last_in_ns;
	__u32 chunks;     /* of the response in flight */
	__u32 requests;   /* on this connection */
	__u8 phase;       /* enum aimesh_sock_phase */
	__u8 flags;       /* AIMESH_SKF_* */
	__u8 proto;       /* AIMESH_PROTO_TCP / _UDP */
	__u8 framing;     /* enum aimesh_framing of the response in flight */
	__u8 chunk_st;    /* enum aimesh_chunk_state (AIMESH_FR_CHUNKED) */
	__u8 close_reason; /* enum aimesh_close_reason: set by the iterator just before it destroys the socket */
	__u16 timed_slot; /* its aimesh_timed slot (valid with AIMESH_SKF_TIMED) */
	__u64 cookie;     /* socket cookie, taken once at connect */
	__u64 body_left;  /* framing: body bytes to go (length), or of the chunk (chunked) */
	__u64 idle_ns;    /* when the last response ended (valid with AIMESH_SKF_IDLE) */
	__u64 doomed_ns;  /* lifecycle: when a pass first found this socket's backend gone */
	__u8 be_addr[16]; /* the backend it was sent to (IPv4-mapped): a socket connected again */
	__be16 be_port;   /* elsewhere later is no longer ours, a changed backend record is "removed" */
	__u16 pad1;
	__u32 pad2;
	__u64 cgroup_id;  /* the connecting process's cgroup: its aimesh_clients entry */
};
AIMESH_STATIC_ASSERT(sizeof(struct aimesh_sock) == 120, "sock size");
AIMESH_STATIC_ASSERT(AIMESH_OFFSETOF(struct aimesh_sock, phase) == 48, "sock.phase");
AIMESH_STATIC_ASSERT(AIMESH_OFFSETOF(struct aimesh_sock, cookie) == 56, "sock.cookie");
AIMESH_STATIC_ASSERT(AIMESH_OFFSETOF(struct aimesh_sock, doomed_ns) == 80, "sock.doomed_ns");
AIMESH_STATIC_ASSERT(AIMESH_OFFSETOF(struct aimesh_sock, be_addr) == 88, "sock.be_addr");

enum aimesh_event_type {
	AIMESH_EV_OPEN = 1,       /* established */
	AIMESH_EV_CLOSE = 2,      /* established connection closed */
	AIMESH_EV_REFUSED = 3,    /* backend answered the SYN with RST */
	AIMESH_EV_TIMEOUT = 4,    /* connect gave up without an answer */
	AIMESH_EV_RESET = 5,      /* established connection reset by the peer */
	AIMESH_EV_NO_BACKEND = 6, /* service had no usable backend (ECONNREFUSED) */
	AIMESH_EV_DENIED = 7,     /* the service's policy does not allow the client (EPERM) */
};

/* aimesh_events (ring buffer) record. */
struct aimesh_event {
	__u64 ts_ns;          /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) */
	__u64 cookie;         /* socket cookie */
	__u64 duration_ns;    /* connect latency (OPEN) or connection time (CLOSE/RESET) */
	__u64 bytes_sent;
	__u64 bytes_received;
	__u32 service_id;
	__u32 backend_id;
	__u32 requests;
	__u32 retransmits;
	__u8 type;            /* enum aimesh_event_type */
	__u8 pad[7];
	__u64 cgroup_id;      /* NO_BACKEND, DENIED: the calling process's cgroup id; else 0 */
};
AIMESH_STATIC_ASSERT(sizeof(struct aimesh_event) == 72, "event size");
AIMESH_STATIC_ASSERT(AIMESH_OFFSETOF(struct aimesh_event, type) == 56, "event.type");

/* ---- connection lifecycle (bpf/sock_iter.bpf.c, lib/lifecycle.h) ---------
 * The agent runs the iter/tcp and iter/udp programs (a "pass") inside each
 * network namespace that holds sockets of its cgroup. They look only at
 * sockets with an aimesh_sockets entry (connected through a service), report
 * each one, and destroy (bpf_sock_destroy, Linux >= 6.5) those the rules
 * select. Idle-ness is decided under the socket lock the iterator holds. */

enum aimesh_close_reason {
	AIMESH_CLOSE_NONE = 0,
	AIMESH_CLOSE_REMOVED = 1,      /* backend gone: idle at once, busy after drain_timeout; UDP at once */
	AIMESH_CLOSE_DRAINED = 2,      /* idle, to a draining/terminating or weight-0 backend */
	AIMESH_CLOSE_EJECTED = 3,      /* idle, to a backend in failure back-off */
	AIMESH_CLOSE_REBALANCED = 4,   /* idle, to a backend over its share (the agent's budget) */
	AIMESH_CLOSE_MAX_AGE = 5,      /* idle, older than the service's max connection age */
	AIMESH_CLOSE_MAX_REQUESTS = 6, /* idle, has carried the service's max requests per connection */
	AIMESH_CLOSE_MAX,
};

/* What a pass saw of a connection (aimesh_conn.state). */
enum aimesh_conn_state {
	AIMESH_CS_IDLE = 0,     /* between requests: the last response ended, nothing in flight */
	AIMESH_CS_BUSY = 1,     /* a request or response in flight, or bytes not yet acked or read */
	AIMESH_CS_NEW = 2,      /* no request yet */
	AIMESH_CS_UNKNOWN = 3,  /* request ends not visible: HTTP/2, not HTTP, body until close, no telemetry */
	AIMESH_CS_DATAGRAM = 4, /* a connected UDP socket */
	AIMESH_CS_CLOSING = 5,  /* TCP past ESTABLISHED (a FIN was sent or received) */
};

/* aimesh_lc_ctl[0]: how a pass behaves; the agent writes it before each pass. */
#define AIMESH_LC_F_ACT 0x1    /* close what the rules select (else only report) */
#define AIMESH_LC_F_PHASES 0x2 /* telemetry is attached: request phases are tracked */
struct aimesh_lc_ctl {
	__u64 idle_guard_ns;    /* a response must have ended this long ago (its last segment read) */
	__u64 new_idle_ns;      /* a connection with no request yet counts as idle after this */
	__u64 drain_timeout_ns; /* for services without an aimesh_lc_svc entry */
	__u32 flags;            /* AIMESH_LC_F_* */
	__u32 pad;
};
AIMESH_STATIC_ASSERT(sizeof(struct aimesh_lc_ctl) == 32, "lc_ctl size");

/* aimesh_lc_svc (array indexed by service id): per-service rules. */
#define AIMESH_LCS_F_SET 0x1
struct aimesh_lc_svc {
	__u64 max_age_ns;       /* 0: none (each connection's limit is jittered by -10..+0 %) */
	__u64 drain_timeout_ns; /* busy connections to a removed backend: destroyed this long after first seen */
	__u32 max_requests;     /* 0: none */
	__u32 flags;            /* AIMESH_LCS_F_* */
};
AIMESH_STATIC_ASSERT(sizeof(struct aimesh_lc_svc) == 24, "lc_svc size");

/* aimesh_lc_be (array indexed by backend id): re-balancing budget. */
struct aimesh_lc_be {
	__u32 rebalance; /* idle connections the pass may still close; it counts down */
	__u32 pad;
};
AIMESH_STATIC_ASSERT(sizeof(struct aimesh_lc_be) == 8, "lc_be size");

/* One record per socket a pass looked at (bpf_seq_write). */
struct aimesh_conn {
	__u64 cookie;
	__u64 age_ns;   /* since ESTABLISHED (TCP) or connect (UDP) */
	__u64 idle_ns;  /* AIMESH_CS_IDLE: since the last response ended */
	__u32 service_id;
	__u32 backend_id;
	__u32 requests;
	__u8 proto;     /* AIMESH_PROTO_* */
	__u8 state;     /* enum aimesh_conn_state */
	__u8 closed;    /* enum aimesh_close_reason: what this pass did; 0: left open */
	__u8 gone;      /* 1: its backend is no longer in aimesh_backends (removed) */
	__u8 saddr[16]; /* local (client) address, IPv4-mapped */
	__u8 daddr[16]; /* peer (backend) address, IPv4-mapped */
	__be16 sport;
	__be16 dport;
	__u32 pad;
};
AIMESH_STATIC_ASSERT(sizeof(struct aimesh_conn) == 80, "conn size");
AIMESH_STATIC_ASSERT(AIMESH_OFFSETOF(struct aimesh_conn, saddr) == 40, "conn.saddr");

/* Context of the SEC("syscall") lifecycle harness (bpf tier): a socket's
 * state and what the iterator would read from the kernel socket in, the
 * verdict out. */
struct aimesh_lc_test_ctx {
	struct aimesh_sock sock;
	__u8 daddr[16];
	__be16 dport;
	__u8 tcp_state;  /* 1 = ESTABLISHED */
	__u8 pad0;
	__u32 unacked;   /* write_seq - snd_una */
	__u32 unread;    /* rcv_nxt - copied_seq */
	__u32 pad1;
	__u64 now_ns;
	__u8 state;      /* out: enum aimesh_conn_state */
	__u8 closed;     /* out: enum aimesh_close_reason (the harness does not destroy anything) */
	__u8 gone;       /* out */
	__u8 pad2[5];
};
AIMESH_STATIC_ASSERT(sizeof(struct aimesh_lc_test_ctx) == 168, "lc_test_ctx size");

/* ---- TC data path: connection tracking (bpf/lib/conntrack.h) ------------- */

#define AIMESH_MAX_CT 262144
/* Idle time after which a flow is forgotten, by protocol and state. */
#define AIMESH_CT_TCP_TIMEOUT_NS (300ULL * 1000000000ULL)
#define AIMESH_CT_UDP_TIMEOUT_NS (60ULL * 1000000000ULL)
#define AIMESH_CT_CLOSING_TIMEOUT_NS (10ULL * 1000000000ULL) /* after a FIN or RST */

enum aimesh_ct_dir {
	AIMESH_CT_FORWARD = 1, /* client -> service: rewrite the destination to the backend */
	AIMESH_CT_REPLY = 2,   /* backend -> client: rewrite the source back to the service */
};
#define AIMESH_CTF_CLOSING 0x1 /* a FIN or RST was seen: the short timeout applies */
#define AIMESH_CTF_LOCAL 0x2   /* the frontend is a node address (a node port): replies are
				* redirected to the client's interface, since input routing
				* drops a packet from outside with a local source */

/* aimesh_ct key: a packet's 5-tuple as it arrives (addresses IPv4-mapped). */
struct aimesh_ct_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};
AIMESH_STATIC_ASSERT(sizeof(struct aimesh_ct_key) == 40, "ct_key size");
AIMESH_STATIC_ASSERT(AIMESH_OFFSETOF(struct aimesh_ct_key, sport) == 32, "ct_key.sport");
AIMESH_STATIC_ASSERT(AIMESH_OFFSETOF(struct aimesh_ct_key, proto) == 36, "ct_key.proto");

/* aimesh_ct value: where to rewrite to. A new flow makes two entries: the
 * forward one (key: client -> frontend; addr/port: the backend) and the reply
 * one (key: backend -> client; addr/port: the frontend). */
struct aimesh_ct {
	__u8 addr[16];
	__be16 port;
	__u8 dir;   /* enum aimesh_ct_dir */
	__u8 flags; /* AIMESH_CTF_* */
	__u32 service_id;
	__u32 backend_id;
	__u32 pad;
	__u64 last_seen_ns; /* bpf_ktime_get_ns() of the last packet (refreshed at most once a second) */
};
AIMESH_STATIC_ASSERT(sizeof(struct aimesh_ct) == 40, "ct size");
AIMESH_STATIC_ASSERT(AIMESH_OFFSETOF(struct aimesh_ct, dir) == 18, "ct.dir");
AIMESH_STATIC_ASSERT(AIMESH_OFFSETOF(struct aimesh_ct, last_seen_ns) == 32, "ct.last_seen_ns");

/* Context of the SEC("syscall") selection harness used by the bpf test tier:
 * the test fills service_id and rnd, the program fills the rest. */
struct aimesh_select_ctx {
	__u64 hash_key;   /* maglev/bounded_hash key (the socket path uses the cgroup id) */
	__u32 service_id;
	__u32 rnd;
	__u8 family;      /* 0: any backend; else only backends of this AIMESH_FAMILY_* */
	__u8 pad[3];
	__s32 err;        /* 0 or -errno */
	__u32 backend_id; /* out */
	__u32 target_id;  /* out: the service the backend belongs to (a split's target, else service_id) */
};
AIMESH_STATIC_ASSERT(sizeof(struct aimesh_select_ctx) == 32, "select_ctx size");

/* Context of the SEC("syscall") histogram harness: the kernel's bucket for
 * a value, so a test can compare it with the agent's histBucket(). */
struct aimesh_hist_ctx {
	__u64 ns;
	__u32 bucket; /* out */
	__u32 pad;
};
AIMESH_STATIC_ASSERT(sizeof(struct aimesh_hist_ctx) == 16, "hist_ctx size");

#endif /* AIMESH_ABI_H */
