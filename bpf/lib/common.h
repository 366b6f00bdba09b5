/* Common includes and helpers for every aimesh BPF object. */
#ifndef AIMESH_BPF_COMMON_H
#define AIMESH_BPF_COMMON_H

#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "aimesh/abi.h"

#ifndef ECONNREFUSED
#define ECONNREFUSED 111
#endif
#ifndef ENOENT
#define ENOENT 2
#endif
#ifndef EPERM
#define EPERM 1
#endif

/* Time units: bpf_ktime_get_ns() and every *_ns field count nanoseconds. */
#define NSEC_PER_SEC 1000000000ULL
#define NSEC_PER_USEC 1000ULL

/* sock_addr programs: 1 lets the call proceed, 0 fails it (with the errno set
 * by bpf_set_retval, EPERM otherwise). */
#define SYS_PROCEED 1
#define SYS_REJECT 0

#endif
