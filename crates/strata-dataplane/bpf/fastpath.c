/* The kernel half of the veth fast path (docs/net-engine.md, "Fast path").
 *
 * Two programs share one flow map:
 *   fp_sock  a socket filter on the slow path's AF_PACKET socket of a veth port's host end;
 *   fp_tc    a TC ingress program (direct action) on the same host end.
 * The packet taps, where the socket sits, run before TC ingress in __netif_receive_skb_core,
 * on the same CPU and in the same softirq. So fp_sock decides for each packet whether the fast
 * path carries it, drops it from the socket if so, and leaves its decision (with a copy of the
 * action) in a per-CPU scratch slot; fp_tc, run next for the same skb, follows that decision:
 * forward with the copied action, or drop (the slow path has its copy). The two never
 * disagree, and a packet is never carried twice nor lost between them, even while userspace
 * changes the map between the two programs. Delivery is into the output veth port's peer
 * (bpf_redirect_peer) or, for a VXLAN port, out of the underlay device after putting the
 * port's outer headers in front of the frame (FP_TUNNEL, encap()).
 *
 * Exactness: the key holds every field the engine's parser reads from an IPv4 frame
 * (strata-net packet.rs), checked the way the parser checks them, so a packet that hits an
 * entry has the engine key of the packet the entry was made from. What the parser would
 * refuse, fragments, SYN/FIN/RST, IPv4 options past the key and everything not IPv4
 * TCP/UDP/ICMP is never looked up: it goes to the slow path.
 *
 * The layouts below are mirrored by crates/strata-dataplane/src/fastpath/key.rs, whose unit
 * test pins every size and offset. Build: scripts/build-bpf (the object is committed).
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>

#define SEC(name) __attribute__((section(name), used))
#undef __always_inline
#define __always_inline inline __attribute__((always_inline))
#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val) *name

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)BPF_FUNC_ktime_get_ns;
static long (*bpf_skb_load_bytes)(const void *skb, __u32 off, void *to, __u32 len) =
	(void *)BPF_FUNC_skb_load_bytes;
static long (*bpf_skb_store_bytes)(struct __sk_buff *skb, __u32 off, const void *from, __u32 len,
				   __u64 flags) = (void *)BPF_FUNC_skb_store_bytes;
static long (*bpf_l3_csum_replace)(struct __sk_buff *skb, __u32 off, __u64 from, __u64 to,
				   __u64 size) = (void *)BPF_FUNC_l3_csum_replace;
static long (*bpf_l4_csum_replace)(struct __sk_buff *skb, __u32 off, __u64 from, __u64 to,
				   __u64 flags) = (void *)BPF_FUNC_l4_csum_replace;
static long (*bpf_skb_vlan_push)(struct __sk_buff *skb, __be16 proto, __u16 tci) =
	(void *)BPF_FUNC_skb_vlan_push;
static long (*bpf_skb_vlan_pop)(struct __sk_buff *skb) = (void *)BPF_FUNC_skb_vlan_pop;
static long (*bpf_redirect_peer)(__u32 ifindex, __u64 flags) = (void *)BPF_FUNC_redirect_peer;
static long (*bpf_redirect_neigh)(__u32 ifindex, void *params, int plen, __u64 flags) =
	(void *)BPF_FUNC_redirect_neigh;
static long (*bpf_skb_adjust_room)(struct __sk_buff *skb, __s32 len_diff, __u32 mode,
				   __u64 flags) = (void *)BPF_FUNC_skb_adjust_room;
static __u32 (*bpf_get_prandom_u32)(void) = (void *)BPF_FUNC_get_prandom_u32;

#define bswap16(x) __builtin_bswap16(x)

/* Key: the input port's host-end ifindex and the engine's exact-match fields of an IPv4
 * frame. Multi-byte fields in host order except the addresses (network order, as on the
 * wire). 40 bytes, no implicit padding. */
struct fp_key {
	__u32 ifindex;     /*  0 */
	__u16 vlan_tci;    /*  4 OpenFlow form: 0x1000 set when tagged (replaces DEI), 0 untagged */
	__u16 vlan_tpid;   /*  6 0x8100 or 0x88a8 when tagged, 0 untagged */
	__u8 eth_dst[6];   /*  8 */
	__u8 eth_src[6];   /* 14 */
	__u16 eth_type;    /* 20 0x0800 (the only one looked up in step 1) */
	__u8 nw_proto;     /* 22 6, 17 or 1 */
	__u8 nw_tos;       /* 23 the whole byte, ECN bits included */
	__u32 nw_src;      /* 24 */
	__u32 nw_dst;      /* 28 */
	__u16 tp_src;      /* 32 ICMP: type */
	__u16 tp_dst;      /* 34 ICMP: code */
	__u8 nw_ttl;       /* 36 */
	__u8 tcp_class;    /* 37 0: not TCP, or a TCP segment without SYN, FIN or RST */
	__u16 pad;         /* 38 zero */
};

/* Action flags. */
#define FP_SET_ETH_DST (1u << 0)
#define FP_SET_ETH_SRC (1u << 1)
#define FP_SET_NW_SRC (1u << 2)
#define FP_SET_NW_DST (1u << 3)
#define FP_SET_TP_SRC (1u << 4)
#define FP_SET_TP_DST (1u << 5)
#define FP_VLAN_POP (1u << 6)  /* remove the tag the frame came with */
#define FP_VLAN_PUSH (1u << 7) /* leave with vlan_tpid/vlan_tci (after a pop: a set) */
#define FP_PEER (1u << 8)      /* deliver with bpf_redirect_peer (the only delivery of step 1) */
/* FP_TUNNEL: encapsulate in VXLAN with the outer IPv4/UDP/VXLAN headers of tun_hdr (the
 * lengths, identification and header checksum filled in here) and deliver with
 * bpf_redirect_neigh to the underlay device out_ifindex. FP_CT: an established connection
 * (ct_zone says which zone; not read here: the entry dies with the connection). */
#define FP_TUNNEL (1u << 9)
#define FP_CT (1u << 10)

/* Outer IPv4 + UDP + VXLAN headers, and the whole encapsulation with the inner Ethernet
 * header that bpf_skb_adjust_room's room holds after the outer one. */
#define TUN_HDR 36
#define TUN_ROOM (TUN_HDR + 14)

/* What to do with a packet of the key: 88 bytes. */
struct fp_action {
	__u32 flags;       /*  0 FP_* */
	__u32 out_ifindex; /*  4 host end of the output port (its peer receives) */
	__u8 eth_dst[6];   /*  8 */
	__u8 eth_src[6];   /* 14 */
	__u32 nw_src;      /* 20 network order */
	__u32 nw_dst;      /* 24 */
	__u16 tp_src;      /* 28 host order */
	__u16 tp_dst;      /* 30 */
	__u16 vlan_tci;    /* 32 the tag as on the wire (PCP, DEI, VID) */
	__u16 vlan_tpid;   /* 34 host order */
	__u32 tun_vni;     /* 36 step 2 */
	__u32 tun_remote;  /* 40 step 2: remote VTEP, network order */
	__u16 tun_sport;   /* 44 step 2: outer UDP source port (the flow hash's pick) */
	__u16 ct_zone;     /* 46 step 2 */
	__u8 tun_hdr[TUN_HDR]; /* 48 FP_TUNNEL: outer IPv4, UDP, VXLAN as userspace encodes them
				* (lengths, id and checksum 0: written per packet) */
	__u16 tun_mtu;     /* 84 FP_TUNNEL: route MTU toward tun_remote (bytes of outer IPv4) */
	__u16 tun_pad;     /* 86 */
};

/* Map value: 128 bytes, one copy per CPU (so the counters need no atomics). */
struct fp_value {
	__u64 gen;          /*  0 switch generation the entry was made at */
	__u64 packets;      /*  8 this CPU's packets */
	__u64 bytes;        /* 16 this CPU's bytes (skb->len: without an offloaded VLAN tag) */
	__u64 last_ns;      /* 24 bpf_ktime_get_ns() of this CPU's last packet */
	__u32 entry;        /* 32 userspace's entry number (which rules and ports it credits) */
	__u32 pad;          /* 36 */
	struct fp_action act; /* 40 */
};

/* The filter's decision for the skb it just saw, for fp_tc on the same CPU. */
#define FP_DECIDED_SLOW 1 /* the socket keeps it: fp_tc drops it */
#define FP_DECIDED_FAST 2 /* the socket dropped it: fp_tc forwards it with act */
struct fp_scratch {
	__u32 ifindex;
	__u32 len;
	__u32 hash;
	__u32 decision;
	struct fp_action act;
};

/* Per-CPU counters of the programs themselves (FP_STAT_*). */
#define FP_STAT_FAST 0      /* forwarded by fp_tc */
#define FP_STAT_SLOW 1      /* left to the socket (fp_tc dropped its own copy) */
#define FP_STAT_NO_FILTER 2 /* fp_tc saw no decision: passed on (TC_ACT_OK) */
#define FP_STAT_ERROR 3     /* a rewrite helper failed: dropped */
#define FP_STAT_STALE 4     /* hit an entry of an older generation */
#define FP_STATS 8

/* Only userspace inserts and deletes (a program updates values in place), so the elements
 * need not be preallocated: a switch with few flows costs little kernel memory. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fp_key);
	__type(value, struct fp_value);
} fp_flows SEC(".maps");

/* [0]: the switch generation (0 = carry nothing). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} fp_gen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fp_scratch);
} fp_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FP_STATS);
	__type(key, __u32);
	__type(value, __u64);
} fp_stats SEC(".maps");

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88a8
#define IPPROTO_ICMP 1
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define TCP_FIN_SYN_RST 0x07
/* Longest frame the engine parses (packet.rs: "frame longer than 65535 bytes"). */
#define MAX_FRAME 65535
/* A socket filter's "keep all of it". */
#define KEEP_ALL 0x40000

struct parsed {
	struct fp_key key;
	__u32 l4;   /* offset of the L4 header from the Ethernet header */
	__u32 hash; /* of the key, for matching the scratch slot */
};

static __always_inline void count(__u32 which)
{
	__u64 *n = bpf_map_lookup_elem(&fp_stats, &which);
	if (n)
		*n += 1;
}

static __always_inline __u32 key_hash(const struct fp_key *k)
{
	const __u32 *w = (const __u32 *)k;
	__u32 h = 0x9e3779b9;
#pragma unroll
	for (int i = 0; i < (int)(sizeof(*k) / 4); i++) {
		h ^= w[i];
		h *= 0x01000193;
		h ^= h >> 15;
	}
	return h;
}

/* Fills p->key from the skb the way the engine's parser would, or returns -1 for a packet
 * the fast path never carries. */
static __always_inline int parse(struct __sk_buff *skb, struct parsed *p)
{
	struct fp_key *k = &p->key;
	__u8 eth[ETH_HLEN];
	__u8 ip[20];
	__u32 len = skb->len;

	__builtin_memset(p, 0, sizeof(*p));
	/* The kernel took any 802.1Q tag out of the frame before the taps (skb_vlan_untag):
	 * it is in the skb's metadata, and the engine sees the frame with it put back. */
	if (skb->vlan_present) {
		__u16 tpid = bswap16((__u16)skb->vlan_proto);
		if (tpid != ETH_P_8021Q && tpid != ETH_P_8021AD)
			return -1;
		k->vlan_tpid = tpid;
		k->vlan_tci = ((__u16)skb->vlan_tci & ~0x1000) | 0x1000;
		if (len + 4 > MAX_FRAME)
			return -1;
	} else if (len > MAX_FRAME) {
		return -1;
	}
	if (bpf_skb_load_bytes(skb, 0, eth, sizeof(eth)) < 0)
		return -1;
	if (eth[12] != (ETH_P_IP >> 8) || eth[13] != (ETH_P_IP & 0xff))
		return -1; /* a second tag (QinQ), IPv6, ARP, ...: the slow path */
	__builtin_memcpy(k->eth_dst, eth, 6);
	__builtin_memcpy(k->eth_src, eth + 6, 6);
	k->eth_type = ETH_P_IP;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, ip, sizeof(ip)) < 0)
		return -1;
	if ((ip[0] >> 4) != 4)
		return -1;
	__u32 ihl = (ip[0] & 0x0f) * 4;
	__u32 tot = ((__u32)ip[2] << 8) | ip[3];
	if (ihl < 20 || tot < ihl || ETH_HLEN + tot > len)
		return -1;
	if ((((__u32)ip[6] << 8) | ip[7]) & 0x3fff)
		return -1; /* a fragment */
	k->nw_tos = ip[1];
	k->nw_ttl = ip[8];
	k->nw_proto = ip[9];
	__builtin_memcpy(&k->nw_src, ip + 12, 4);
	__builtin_memcpy(&k->nw_dst, ip + 16, 4);
	p->l4 = ETH_HLEN + ihl;
	if (ip[9] == IPPROTO_TCP) {
		__u8 th[14];
		if (ihl + 20 > tot)
			return -1;
		if (bpf_skb_load_bytes(skb, p->l4, th, sizeof(th)) < 0)
			return -1;
		__u32 doff = (th[12] >> 4) * 4;
		if (doff < 20 || ihl + doff > tot)
			return -1;
		if (th[13] & TCP_FIN_SYN_RST)
			return -1; /* connection setup and teardown: always the slow path */
		k->tp_src = ((__u16)th[0] << 8) | th[1];
		k->tp_dst = ((__u16)th[2] << 8) | th[3];
	} else if (ip[9] == IPPROTO_UDP) {
		__u8 uh[4];
		if (ihl + 8 > tot)
			return -1;
		if (bpf_skb_load_bytes(skb, p->l4, uh, sizeof(uh)) < 0)
			return -1;
		k->tp_src = ((__u16)uh[0] << 8) | uh[1];
		k->tp_dst = ((__u16)uh[2] << 8) | uh[3];
	} else if (ip[9] == IPPROTO_ICMP) {
		__u8 ih[2];
		if (ihl + 4 > tot)
			return -1;
		if (bpf_skb_load_bytes(skb, p->l4, ih, sizeof(ih)) < 0)
			return -1;
		k->tp_src = ih[0];
		k->tp_dst = ih[1];
	} else {
		return -1;
	}
	k->ifindex = skb->ifindex;
	p->hash = key_hash(k);
	return 0;
}

SEC("socket")
int fp_sock(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct fp_scratch *s = bpf_map_lookup_elem(&fp_scratch, &zero);
	struct parsed p;

	if (!s)
		return KEEP_ALL;
	s->ifindex = skb->ifindex;
	s->len = skb->len;
	s->hash = 0;
	s->decision = FP_DECIDED_SLOW;
	if (parse(skb, &p) < 0)
		return KEEP_ALL;
	__u64 *gen = bpf_map_lookup_elem(&fp_gen, &zero);
	if (!gen || *gen == 0)
		return KEEP_ALL;
	struct fp_value *v = bpf_map_lookup_elem(&fp_flows, &p.key);
	if (!v)
		return KEEP_ALL;
	if (v->gen != *gen) {
		count(FP_STAT_STALE);
		return KEEP_ALL;
	}
	/* An outer packet above the underlay MTU: the slow path fragments it (or refuses it
	 * with DF). A GSO frame is segmented to fit (bpf_skb_adjust_room lowers its size). */
	if ((v->act.flags & FP_TUNNEL) && skb->gso_size == 0 && skb->len + TUN_HDR > v->act.tun_mtu)
		return KEEP_ALL;
	/* bpf_skb_adjust_room can lower the segment size of TCP GSO only (a UDP GSO size
	 * delimits datagrams): other GSO frames to a tunnel take the slow path. */
	if ((v->act.flags & FP_TUNNEL) && skb->gso_size != 0 && p.key.nw_proto != IPPROTO_TCP)
		return KEEP_ALL;
	v->packets += 1;
	v->bytes += skb->len;
	v->last_ns = bpf_ktime_get_ns();
	s->hash = p.hash;
	s->act = v->act;
	s->decision = FP_DECIDED_FAST;
	return 0;
}

/* Rewrites the frame as act says. Offsets do not move: a VLAN tag lives in the skb's
 * metadata on both sides. */
static __always_inline int rewrite(struct __sk_buff *skb, const struct parsed *p,
				   const struct fp_action *a)
{
	const struct fp_key *k = &p->key;
	__u32 csum_at = 0;
	__u64 mangled = 0;

	if (k->nw_proto == IPPROTO_TCP) {
		csum_at = p->l4 + 16;
	} else if (k->nw_proto == IPPROTO_UDP) {
		csum_at = p->l4 + 6;
		mangled = BPF_F_MARK_MANGLED_0; /* a UDP checksum of 0 means "none": keep it */
	}
	if (a->flags & FP_VLAN_POP) {
		if (bpf_skb_vlan_pop(skb) < 0)
			return -1;
	}
	if (a->flags & FP_VLAN_PUSH) {
		if (bpf_skb_vlan_push(skb, bswap16(a->vlan_tpid), a->vlan_tci) < 0)
			return -1;
	}
	if (a->flags & FP_SET_ETH_DST) {
		if (bpf_skb_store_bytes(skb, 0, a->eth_dst, 6, 0) < 0)
			return -1;
	}
	if (a->flags & FP_SET_ETH_SRC) {
		if (bpf_skb_store_bytes(skb, 6, a->eth_src, 6, 0) < 0)
			return -1;
	}
	if (a->flags & FP_SET_NW_SRC) {
		if (csum_at && bpf_l4_csum_replace(skb, csum_at, k->nw_src, a->nw_src,
						   BPF_F_PSEUDO_HDR | mangled | 4) < 0)
			return -1;
		if (bpf_l3_csum_replace(skb, ETH_HLEN + 10, k->nw_src, a->nw_src, 4) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, ETH_HLEN + 12, &a->nw_src, 4, 0) < 0)
			return -1;
	}
	if (a->flags & FP_SET_NW_DST) {
		if (csum_at && bpf_l4_csum_replace(skb, csum_at, k->nw_dst, a->nw_dst,
						   BPF_F_PSEUDO_HDR | mangled | 4) < 0)
			return -1;
		if (bpf_l3_csum_replace(skb, ETH_HLEN + 10, k->nw_dst, a->nw_dst, 4) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, ETH_HLEN + 16, &a->nw_dst, 4, 0) < 0)
			return -1;
	}
	if ((a->flags & FP_SET_TP_SRC) && csum_at) {
		__u16 from = bswap16(k->tp_src), to = bswap16(a->tp_src);
		if (bpf_l4_csum_replace(skb, csum_at, from, to, mangled | 2) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, p->l4, &to, 2, 0) < 0)
			return -1;
	}
	if ((a->flags & FP_SET_TP_DST) && csum_at) {
		__u16 from = bswap16(k->tp_dst), to = bswap16(a->tp_dst);
		if (bpf_l4_csum_replace(skb, csum_at, from, to, mangled | 2) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, p->l4 + 2, &to, 2, 0) < 0)
			return -1;
	}
	return 0;
}

/* Puts the VXLAN encapsulation of a->tun_hdr in front of the frame: room for the outer
 * headers after the Ethernet header, which then becomes the outer one (bpf_redirect_neigh
 * writes its addresses), and the inner Ethernet header copied behind the outer ones. */
static __always_inline int encap(struct __sk_buff *skb, const struct fp_action *a)
{
	__u8 h[TUN_ROOM];
	__u32 inner = skb->len;

	if (inner + TUN_HDR > 0xffff && skb->gso_size == 0)
		return -1;
	__builtin_memcpy(h, a->tun_hdr, TUN_HDR);
	if (bpf_skb_load_bytes(skb, 0, h + TUN_HDR, ETH_HLEN) < 0)
		return -1;
	/* A GSO frame's lengths are rewritten for every segment when it is split. */
	__u16 tot = bswap16((__u16)(inner + TUN_HDR)), ulen = bswap16((__u16)(inner + 16));
	__u16 id = (__u16)bpf_get_prandom_u32();
	__builtin_memcpy(h + 2, &tot, 2);
	__builtin_memcpy(h + 4, &id, 2);
	__builtin_memcpy(h + 24, &ulen, 2);
	h[10] = 0;
	h[11] = 0;
	__u32 sum = 0;
#pragma unroll
	for (int i = 0; i < 20; i += 2)
		sum += ((__u32)h[i] << 8) | h[i + 1];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	h[10] = (__u8)(~sum >> 8);
	h[11] = (__u8)~sum;
	__u64 flags = BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP |
		      BPF_F_ADJ_ROOM_ENCAP_L2_ETH | BPF_F_ADJ_ROOM_ENCAP_L2(ETH_HLEN);
	if (bpf_skb_adjust_room(skb, TUN_ROOM, BPF_ADJ_ROOM_MAC, flags) < 0)
		return -1;
	if (bpf_skb_store_bytes(skb, ETH_HLEN, h, TUN_ROOM, 0) < 0)
		return -1;
	return 0;
}

SEC("classifier")
int fp_tc(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct fp_scratch *s = bpf_map_lookup_elem(&fp_scratch, &zero);
	struct parsed p;

	if (!s || s->ifindex != skb->ifindex || s->len != skb->len) {
		/* No filter saw this skb: no socket took a copy, so the host stack may have it
		 * (the host end has no address; it drops it). */
		count(FP_STAT_NO_FILTER);
		return TC_ACT_OK;
	}
	s->ifindex = 0;
	if (s->decision != FP_DECIDED_FAST) {
		count(FP_STAT_SLOW);
		return TC_ACT_SHOT;
	}
	if (parse(skb, &p) < 0 || p.hash != s->hash) {
		/* Not the packet the filter decided for (it never reached us): the filter did
		 * not see this one either. */
		count(FP_STAT_NO_FILTER);
		return TC_ACT_OK;
	}
	struct fp_action a = s->act;
	if (rewrite(skb, &p, &a) < 0) {
		count(FP_STAT_ERROR);
		return TC_ACT_SHOT;
	}
	if (a.flags & FP_TUNNEL) {
		if (encap(skb, &a) < 0) {
			count(FP_STAT_ERROR);
			return TC_ACT_SHOT;
		}
		count(FP_STAT_FAST);
		return bpf_redirect_neigh(a.out_ifindex, 0, 0, 0);
	}
	count(FP_STAT_FAST);
	return bpf_redirect_peer(a.out_ifindex, 0);
}

/* The project's licence; no GPL-only helper is used. */
char _license[] SEC("license") = "Apache-2.0";
