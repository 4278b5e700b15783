/*
 * p4lb data plane (P4_16, v1model).
 *
 * This file is the single source of truth for the pipeline; docs/pipeline.md describes the
 * same contract in prose. Every control-plane visible object carries a pinned @id so that
 * P4Info IDs never depend on the compiler's name hashing (the one exception is the digest,
 * whose ID v1model cannot pin; see docs/pipeline.md).
 *
 * Compile: make -C p4 p4 (p4c-bm2-ss --p4runtime-files p4lb.p4info.txt -o p4lb.json p4lb.p4;
 * p4c 1.2.4 names the P4Info format by suffix and knows .txt, not .txtpb)
 */

#include <core.p4>
#include <v1model.p4>

/* ------------------------------------------------------------------------------------------ */
/* Constants                                                                                  */
/* ------------------------------------------------------------------------------------------ */

const bit<16> ETHERTYPE_IPV4 = 0x0800;
const bit<16> ETHERTYPE_ARP  = 0x0806;

const bit<8> PROTO_TCP = 6;
const bit<8> PROTO_UDP = 17;

const bit<16> ARP_HTYPE_ETHERNET = 1;
const bit<16> ARP_OPER_REQUEST   = 1;
const bit<16> ARP_OPER_REPLY     = 2;

/* TCP flag bits inside tcp_t.flags (CWR ECE URG ACK PSH RST SYN FIN). */
const bit<8> TCP_FLAG_ACK = 0x10;
const bit<8> TCP_FLAG_RST = 0x04;
const bit<8> TCP_FLAG_SYN = 0x02;
const bit<8> TCP_FLAG_FIN = 0x01;

/* conn_learn_t.event */
const bit<8> EVENT_LEARN = 0;
const bit<8> EVENT_FIN   = 1;
const bit<8> EVENT_RST   = 2;

/* Reasons, i.e. indexes into P4lbIngress.drops. */
const bit<32> DROP_LOCKED       = 1;
const bit<32> DROP_NO_ROUTE     = 2;
const bit<32> DROP_PARSER_ERROR = 3;
const bit<32> DROP_TTL          = 4;
const bit<32> DROP_NO_BACKEND   = 5;
/* Not counted by this program: a target that holds frames counts here a frame sent to
 * HOLD_PORT that its hold buffer had no room for (docs/switch-pipeline.md). */
const bit<32> DROP_HOLD_FULL    = 6;

/* The hold port: frames of a locked backend or route leave for it instead of being dropped.
 * A target with a hold buffer (p4lb-switch) keeps them there and, when the backends or
 * ipv4_routes table changes, runs each through the pipeline again as if it had just arrived
 * on its ingress port; a target without one (BMv2: no interface is port 510) drops them.
 * Never a data port (ports are 1..509), never the drop port (511). */
const bit<9> HOLD_PORT = 510;

const bit<32> BACKEND_COUNTER_SIZE = 4096;
const bit<32> SERVICE_COUNTER_SIZE = 1024;
const bit<32> TRANSIT_SIZE         = 65536;

/* transit_state values: a new attempt, the backend's reply went through the slot, the client
 * proved itself (handshake-completing ACK, or a UDP datagram after the reply). */
const bit<2> TRANSIT_NEW         = 0;
const bit<2> TRANSIT_REPLY_SEEN  = 1;
const bit<2> TRANSIT_ESTABLISHED = 2;

/* ------------------------------------------------------------------------------------------ */
/* Headers                                                                                    */
/* ------------------------------------------------------------------------------------------ */

header ethernet_t {
    bit<48> dst_addr;
    bit<48> src_addr;
    bit<16> ether_type;
}

/* ARP for IPv4 over Ethernet (RFC 826), the only kind the parser accepts. */
header arp_t {
    bit<16> htype;
    bit<16> ptype;
    bit<8>  hlen;
    bit<8>  plen;
    bit<16> oper;
    bit<48> sha;
    bit<32> spa;
    bit<48> tha;
    bit<32> tpa;
}

/* IPv4 with its options (0..40 bytes) kept as a varbit so they survive rewriting. */
header ipv4_t {
    bit<4>      version;
    bit<4>      ihl;
    bit<8>      diffserv;
    bit<16>     total_len;
    bit<16>     identification;
    bit<3>      flags;
    bit<13>     frag_offset;
    bit<8>      ttl;
    bit<8>      protocol;
    bit<16>     hdr_checksum;
    bit<32>     src_addr;
    bit<32>     dst_addr;
    varbit<320> options;
}

/* First byte of an IPv4 header, read ahead to size the options. */
header ipv4_lookahead_t {
    bit<4> version;
    bit<4> ihl;
}

/* TCP fixed header; options stay in the payload (covered by the checksum as payload). */
header tcp_t {
    bit<16> src_port;
    bit<16> dst_port;
    bit<32> seq_no;
    bit<32> ack_no;
    bit<4>  data_offset;
    bit<4>  reserved;
    bit<8>  flags;
    bit<16> window;
    bit<16> checksum;
    bit<16> urgent_ptr;
}

header udp_t {
    bit<16> src_port;
    bit<16> dst_port;
    bit<16> length;
    bit<16> checksum;
}

struct headers_t {
    ethernet_t ethernet;
    arp_t      arp;
    ipv4_t     ipv4;
    tcp_t      tcp;
    udp_t      udp;
}

/* The conn_learn digest: the client's 5-tuple as seen on ingress (dst = VIP), the service,
 * the backend (0 when the backend side reports a close) and what happened (EVENT_*). */
@name("conn_learn")
struct conn_learn_t {
    bit<32> src_addr;
    bit<32> dst_addr;
    bit<8>  protocol;
    bit<16> src_port;
    bit<16> dst_port;
    bit<16> service_id;
    bit<16> backend_id;
    bit<8>  event;
}

struct metadata_t {
    bit<16> l4_sport;      /* TCP/UDP source port, 0 otherwise */
    bit<16> l4_dport;      /* TCP/UDP destination port, 0 otherwise */
    bit<16> l4_len;        /* IPv4 payload length (total_len - header length) */
    bit<16> service_id;
    bit<16> slot_count;
    bit<16> target_port;
    bit<16> slot;
    bit<16> backend_id;
    bit<16> mark;          /* transit mark read on the reverse path (service_id + 1) */
    bit<32> transit_index;
    /* The transit slot at transit_index, as read. */
    bit<16> t_mark;
    bit<32> t_client;
    bit<32> t_backend;
    bit<16> t_cport;
    bit<16> t_bport;
    bit<8>  t_proto;
    bit<2>  t_state;
    bit<32> t_ack;
    bool    conn_miss;
    bool    rewritten;     /* source rewritten to a VIP on the reverse path */
    bool    send_digest;   /* meta.learn is sent at the end of ingress */
    conn_learn_t learn;
}

error {
    IPv4BadVersion,
    IPv4BadHeaderLength,
    IPv4BadTotalLength
}

/* ------------------------------------------------------------------------------------------ */
/* Shared action                                                                              */
/* ------------------------------------------------------------------------------------------ */

/* p4lb's own empty action (instead of core.p4's NoAction) so that its ID is pinned too. */
@id(0x01000000)
action nop() {
}

/* ------------------------------------------------------------------------------------------ */
/* Parser                                                                                     */
/* ------------------------------------------------------------------------------------------ */

parser P4lbParser(packet_in packet,
                  out headers_t hdr,
                  inout metadata_t meta,
                  inout standard_metadata_t standard_metadata) {

    state start {
        meta.l4_sport = 0;
        meta.l4_dport = 0;
        meta.l4_len = 0;
        packet.extract(hdr.ethernet);
        transition select(hdr.ethernet.ether_type) {
            ETHERTYPE_ARP: parse_arp;
            ETHERTYPE_IPV4: parse_ipv4;
            default: accept;
        }
    }

    state parse_arp {
        packet.extract(hdr.arp);
        transition accept;
    }

    state parse_ipv4 {
        ipv4_lookahead_t first = packet.lookahead<ipv4_lookahead_t>();
        verify(first.version == 4, error.IPv4BadVersion);
        verify(first.ihl >= 5, error.IPv4BadHeaderLength);
        /* Options: (ihl - 5) 32-bit words. */
        packet.extract(hdr.ipv4, (bit<32>)(((bit<16>)first.ihl - 5) << 5));
        verify(hdr.ipv4.total_len >= ((bit<16>)hdr.ipv4.ihl << 2), error.IPv4BadTotalLength);
        meta.l4_len = hdr.ipv4.total_len - ((bit<16>)hdr.ipv4.ihl << 2);
        /* Fragments (MF set or a non-zero offset) are not parsed beyond IPv4: their transport
         * header is absent or the payload incomplete, so ports and checksums stay untouched. */
        transition select(hdr.ipv4.flags[0:0], hdr.ipv4.frag_offset, hdr.ipv4.protocol) {
            (1w0, 13w0, PROTO_TCP): parse_tcp;
            (1w0, 13w0, PROTO_UDP): parse_udp;
            default: accept;
        }
    }

    state parse_tcp {
        packet.extract(hdr.tcp);
        meta.l4_sport = hdr.tcp.src_port;
        meta.l4_dport = hdr.tcp.dst_port;
        transition accept;
    }

    state parse_udp {
        packet.extract(hdr.udp);
        meta.l4_sport = hdr.udp.src_port;
        meta.l4_dport = hdr.udp.dst_port;
        transition accept;
    }
}

/* Incoming checksums are not verified: the pipeline recomputes them on the way out. */
control P4lbVerifyChecksum(inout headers_t hdr, inout metadata_t meta) {
    apply {
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Ingress                                                                                    */
/* ------------------------------------------------------------------------------------------ */

control P4lbIngress(inout headers_t hdr,
                    inout metadata_t meta,
                    inout standard_metadata_t standard_metadata) {

    @id(0x12000001)
    counter(BACKEND_COUNTER_SIZE, CounterType.packets_and_bytes) backend_packets;
    @id(0x12000002)
    counter(SERVICE_COUNTER_SIZE, CounterType.packets_and_bytes) service_packets;
    @id(0x12000003)
    counter(16, CounterType.packets_and_bytes) drops;

    /* Transit slots: one pending VIP connection per index, indexed by crc16 of its tuple
     * after DNAT (client, backend, protocol, client port, backend port). A slot is used only
     * when the tuple it stores equals the packet's exactly (docs/pipeline.md). */
    @id(0x16000001)
    register<bit<16>>(TRANSIT_SIZE) transit_marks;        /* service_id + 1, 0 = free */
    @id(0x16000002)
    register<bit<32>>(TRANSIT_SIZE) transit_client;
    @id(0x16000003)
    register<bit<32>>(TRANSIT_SIZE) transit_backend;
    @id(0x16000004)
    register<bit<16>>(TRANSIT_SIZE) transit_client_port;
    @id(0x16000005)
    register<bit<16>>(TRANSIT_SIZE) transit_backend_port;
    @id(0x16000006)
    register<bit<8>>(TRANSIT_SIZE) transit_protocol;
    @id(0x16000007)
    register<bit<2>>(TRANSIT_SIZE) transit_state;         /* TRANSIT_* below */
    @id(0x16000008)
    register<bit<32>>(TRANSIT_SIZE) transit_server_ack;   /* TCP: backend ISN + 1 */

    /* --- ARP proxy ------------------------------------------------------------------------ */

    /* Answer an ARP request for tpa with `mac`, out of the port it came in on. */
    @id(0x01000001)
    action arp_reply(bit<48> mac) {
        bit<32> requested = hdr.arp.tpa;
        hdr.arp.oper = ARP_OPER_REPLY;
        hdr.arp.tha = hdr.arp.sha;
        hdr.arp.tpa = hdr.arp.spa;
        hdr.arp.sha = mac;
        hdr.arp.spa = requested;
        hdr.ethernet.dst_addr = hdr.ethernet.src_addr;
        hdr.ethernet.src_addr = mac;
        standard_metadata.egress_spec = standard_metadata.ingress_port;
    }

    @id(0x02000001)
    table arp_proxy {
        key = {
            hdr.arp.tpa : lpm;
        }
        actions = {
            arp_reply;
            @defaultonly nop;
        }
        const default_action = nop();
        size = 1024;
    }

    /* --- VIP path ------------------------------------------------------------------------- */

    @id(0x01000002)
    action set_service(bit<16> service_id, bit<16> slot_count, bit<16> target_port) {
        meta.service_id = service_id;
        meta.slot_count = slot_count;
        meta.target_port = target_port;
    }

    @id(0x02000002)
    table vip_services {
        key = {
            hdr.ipv4.dst_addr : exact;
            hdr.ipv4.protocol : exact;
            meta.l4_dport     : exact;
        }
        actions = {
            set_service;
            @defaultonly nop;
        }
        const default_action = nop();
        size = 1024;
    }

    @id(0x01000003)
    action conn_pin(bit<16> backend_id) {
        meta.backend_id = backend_id;
    }

    @id(0x01000004)
    action conn_miss() {
        meta.conn_miss = true;
    }

    @id(0x02000003)
    table conn_table {
        key = {
            hdr.ipv4.src_addr : exact;
            hdr.ipv4.dst_addr : exact;
            hdr.ipv4.protocol : exact;
            meta.l4_sport     : exact;
            meta.l4_dport     : exact;
        }
        actions = {
            conn_pin;
            @defaultonly conn_miss;
        }
        const default_action = conn_miss();
        support_timeout = true;
        size = 65536;
    }

    @id(0x01000005)
    action set_backend(bit<16> backend_id) {
        meta.backend_id = backend_id;
    }

    @id(0x02000004)
    table maglev_slots {
        key = {
            meta.service_id : exact;
            meta.slot       : exact;
        }
        actions = {
            set_backend;
            @defaultonly nop;
        }
        const default_action = nop();
        size = 65536;
    }

    /* DNAT towards the chosen backend: the one place a VIP packet's destination is rewritten. */
    @id(0x01000006)
    action backend_forward(bit<32> ip, bit<48> dmac, bit<9> port) {
        hdr.ipv4.dst_addr = ip;
        if (hdr.tcp.isValid()) {
            hdr.tcp.dst_port = meta.target_port;
            meta.l4_dport = meta.target_port;
        }
        if (hdr.udp.isValid()) {
            hdr.udp.dst_port = meta.target_port;
            meta.l4_dport = meta.target_port;
        }
        hdr.ethernet.dst_addr = dmac;
        hdr.ipv4.ttl = hdr.ipv4.ttl - 1;
        standard_metadata.egress_spec = port;
    }

    /* The backend is locked (migrating): the packet is held, not forwarded (HOLD_PORT). */
    @id(0x01000007)
    action backend_locked() {
        drops.count(DROP_LOCKED);
        standard_metadata.egress_spec = HOLD_PORT;
    }

    @id(0x02000005)
    table backends {
        key = {
            meta.backend_id : exact;
        }
        actions = {
            backend_forward;
            backend_locked;
            @defaultonly nop;
        }
        const default_action = nop();
        size = 4096;
    }

    /* --- Reverse path --------------------------------------------------------------------- */

    /* SNAT of a backend's reply back to the VIP the client talks to. */
    @id(0x01000008)
    action rewrite_src(bit<32> vip, bit<16> vport, bit<16> service_id) {
        hdr.ipv4.src_addr = vip;
        if (hdr.tcp.isValid()) {
            hdr.tcp.src_port = vport;
        }
        if (hdr.udp.isValid()) {
            hdr.udp.src_port = vport;
        }
        meta.service_id = service_id;
        meta.rewritten = true;
    }

    @id(0x02000006)
    table conn_reverse {
        key = {
            hdr.ipv4.src_addr : exact;
            hdr.ipv4.dst_addr : exact;
            hdr.ipv4.protocol : exact;
            meta.l4_sport     : exact;
            meta.l4_dport     : exact;
        }
        actions = {
            rewrite_src;
            @defaultonly nop;
        }
        const default_action = nop();
        size = 65536;
    }

    @id(0x02000007)
    table service_vip {
        key = {
            meta.mark : exact;
        }
        actions = {
            rewrite_src;
            @defaultonly nop;
        }
        const default_action = nop();
        size = 1024;
    }

    /* --- Routing -------------------------------------------------------------------------- */

    @id(0x01000009)
    action route_to_port(bit<9> port, bit<48> dmac) {
        hdr.ethernet.dst_addr = dmac;
        hdr.ipv4.ttl = hdr.ipv4.ttl - 1;
        standard_metadata.egress_spec = port;
    }

    /* The destination is locked (migrating): held like backend_locked. */
    @id(0x0100000A)
    action route_locked() {
        drops.count(DROP_LOCKED);
        standard_metadata.egress_spec = HOLD_PORT;
    }

    @id(0x0100000B)
    action route_drop() {
        drops.count(DROP_NO_ROUTE);
        mark_to_drop(standard_metadata);
    }

    @id(0x02000008)
    table ipv4_routes {
        key = {
            hdr.ipv4.dst_addr : lpm;
        }
        actions = {
            route_to_port;
            route_locked;
            route_drop;
        }
        const default_action = route_drop();
        size = 4096;
    }

    /* --- Plain L2 ------------------------------------------------------------------------- */

    @id(0x0100000C)
    action l2_output(bit<9> port) {
        standard_metadata.egress_spec = port;
    }

    @id(0x0100000D)
    action l2_drop() {
        mark_to_drop(standard_metadata);
    }

    @id(0x02000009)
    table l2_forward {
        key = {
            hdr.ethernet.dst_addr : exact;
        }
        actions = {
            l2_output;
            l2_drop;
        }
        const default_action = l2_drop();
        size = 1024;
    }

    /* --- Ingress flow --------------------------------------------------------------------- */

    apply {
        meta.conn_miss = false;
        meta.rewritten = false;
        meta.backend_id = 0;
        meta.service_id = 0;
        meta.mark = 0;
        meta.send_digest = false;

        if (standard_metadata.parser_error != error.NoError) {
            drops.count(DROP_PARSER_ERROR);
            mark_to_drop(standard_metadata);
        } else if (hdr.arp.isValid()) {
            if (hdr.arp.htype == ARP_HTYPE_ETHERNET && hdr.arp.ptype == ETHERTYPE_IPV4 &&
                    hdr.arp.hlen == 6 && hdr.arp.plen == 4 &&
                    hdr.arp.oper == ARP_OPER_REQUEST && hdr.arp.spa != hdr.arp.tpa) {
                if (!arp_proxy.apply().hit) {
                    mark_to_drop(standard_metadata);
                }
            } else {
                mark_to_drop(standard_metadata);
            }
        } else if (hdr.ipv4.isValid()) {
            if (hdr.ipv4.ttl <= 1) {
                drops.count(DROP_TTL);
                mark_to_drop(standard_metadata);
            } else if (vip_services.apply().hit) {
                /* 1. VIP traffic: pinned connection, or Maglev choice (learned once the
                 *    connection proves its client real, below). */
                meta.learn.src_addr = hdr.ipv4.src_addr;
                meta.learn.dst_addr = hdr.ipv4.dst_addr;
                meta.learn.protocol = hdr.ipv4.protocol;
                meta.learn.src_port = meta.l4_sport;
                meta.learn.dst_port = meta.l4_dport;
                meta.learn.service_id = meta.service_id;
                meta.learn.event = EVENT_LEARN;
                conn_table.apply();
                if (meta.conn_miss) {
                    if (meta.slot_count != 0) {
                        hash(meta.slot, HashAlgorithm.crc16, 16w0,
                             { hdr.ipv4.src_addr, hdr.ipv4.dst_addr, hdr.ipv4.protocol,
                               meta.l4_sport, meta.l4_dport },
                             meta.slot_count);
                        maglev_slots.apply();
                    }
                }
                meta.learn.backend_id = meta.backend_id;
                if (meta.backend_id == 0) {
                    drops.count(DROP_NO_BACKEND);
                    mark_to_drop(standard_metadata);
                } else {
                    switch (backends.apply().action_run) {
                        backend_forward: {
                            if ((bit<32>)meta.backend_id < BACKEND_COUNTER_SIZE) {
                                backend_packets.count((bit<32>)meta.backend_id);
                            }
                            if ((bit<32>)meta.service_id < SERVICE_COUNTER_SIZE) {
                                service_packets.count((bit<32>)meta.service_id);
                            }
                            if (meta.conn_miss) {
                                /* Pending connection: its transit slot, keyed by the client
                                 * and both ports after DNAT; the backend's address is left
                                 * out (crc16 is linear: with it, one client's connections to
                                 * two backends collided at ports a fixed XOR apart). */
                                hash(meta.transit_index, HashAlgorithm.crc16, 32w0,
                                     { hdr.ipv4.src_addr, hdr.ipv4.protocol,
                                       meta.l4_sport, meta.l4_dport },
                                     TRANSIT_SIZE);
                                transit_marks.read(meta.t_mark, meta.transit_index);
                                transit_client.read(meta.t_client, meta.transit_index);
                                transit_backend.read(meta.t_backend, meta.transit_index);
                                transit_client_port.read(meta.t_cport, meta.transit_index);
                                transit_backend_port.read(meta.t_bport, meta.transit_index);
                                transit_protocol.read(meta.t_proto, meta.transit_index);
                                transit_state.read(meta.t_state, meta.transit_index);
                                transit_server_ack.read(meta.t_ack, meta.transit_index);
                                bool holds = meta.t_mark != 0 &&
                                             meta.t_client == hdr.ipv4.src_addr &&
                                             meta.t_backend == hdr.ipv4.dst_addr &&
                                             meta.t_proto == hdr.ipv4.protocol &&
                                             meta.t_cport == meta.l4_sport &&
                                             meta.t_bport == meta.l4_dport;
                                bool syn = hdr.tcp.isValid() &&
                                           (hdr.tcp.flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) ==
                                               TCP_FLAG_SYN;
                                if (syn || (hdr.udp.isValid() && !holds)) {
                                    /* A new attempt (re)writes the slot, flags reset. */
                                    transit_marks.write(meta.transit_index, meta.service_id + 1);
                                    transit_client.write(meta.transit_index, hdr.ipv4.src_addr);
                                    transit_backend.write(meta.transit_index, hdr.ipv4.dst_addr);
                                    transit_client_port.write(meta.transit_index, meta.l4_sport);
                                    transit_backend_port.write(meta.transit_index, meta.l4_dport);
                                    transit_protocol.write(meta.transit_index, hdr.ipv4.protocol);
                                    transit_state.write(meta.transit_index, TRANSIT_NEW);
                                    transit_server_ack.write(meta.transit_index, 0);
                                } else if (holds && meta.t_state == TRANSIT_ESTABLISHED) {
                                    /* Proven before: every packet until the connection is
                                     * pinned asks again, so a lost digest is not final. */
                                    meta.send_digest = true;
                                } else if (holds && meta.t_state == TRANSIT_REPLY_SEEN) {
                                    /* Learn only with proof the client is real: UDP after
                                     * the backend's reply; TCP on the ACK that completes
                                     * the handshake (ack_no = the backend's ISN + 1). */
                                    if (hdr.udp.isValid()) {
                                        meta.send_digest = true;
                                    } else if (hdr.tcp.isValid() &&
                                               (hdr.tcp.flags & (TCP_FLAG_SYN | TCP_FLAG_ACK |
                                                                 TCP_FLAG_RST)) == TCP_FLAG_ACK &&
                                               hdr.tcp.ack_no == meta.t_ack) {
                                        meta.send_digest = true;
                                    }
                                    if (meta.send_digest) {
                                        transit_state.write(meta.transit_index,
                                                            TRANSIT_ESTABLISHED);
                                    }
                                }
                            } else if (hdr.tcp.isValid() &&
                                       (hdr.tcp.flags & (TCP_FLAG_FIN | TCP_FLAG_RST)) != 0) {
                                /* A pinned connection closes (client side). */
                                if ((hdr.tcp.flags & TCP_FLAG_RST) != 0) {
                                    meta.learn.event = EVENT_RST;
                                } else {
                                    meta.learn.event = EVENT_FIN;
                                }
                                meta.send_digest = true;
                            }
                        }
                        backend_locked: {
                        }
                        default: {
                            drops.count(DROP_NO_BACKEND);
                            mark_to_drop(standard_metadata);
                        }
                    }
                }
            } else {
                /* 2. Not VIP: a backend's reply is rewritten back to its VIP. */
                if (conn_reverse.apply().hit) {
                    if (hdr.tcp.isValid() &&
                            (hdr.tcp.flags & (TCP_FLAG_FIN | TCP_FLAG_RST)) != 0) {
                        /* A pinned connection closes (backend side): report it as the
                         * client sees it (rewrite_src already put the VIP in place). */
                        meta.learn.src_addr = hdr.ipv4.dst_addr;
                        meta.learn.dst_addr = hdr.ipv4.src_addr;
                        meta.learn.protocol = hdr.ipv4.protocol;
                        meta.learn.src_port = hdr.tcp.dst_port;
                        meta.learn.dst_port = hdr.tcp.src_port;
                        meta.learn.service_id = meta.service_id;
                        meta.learn.backend_id = 0;
                        if ((hdr.tcp.flags & TCP_FLAG_RST) != 0) {
                            meta.learn.event = EVENT_RST;
                        } else {
                            meta.learn.event = EVENT_FIN;
                        }
                        meta.send_digest = true;
                    }
                } else {
                    /* The slot of the reversed tuple, used only if it holds exactly it. */
                    hash(meta.transit_index, HashAlgorithm.crc16, 32w0,
                         { hdr.ipv4.dst_addr, hdr.ipv4.protocol,
                           meta.l4_dport, meta.l4_sport },
                         TRANSIT_SIZE);
                    transit_marks.read(meta.t_mark, meta.transit_index);
                    transit_client.read(meta.t_client, meta.transit_index);
                    transit_backend.read(meta.t_backend, meta.transit_index);
                    transit_client_port.read(meta.t_cport, meta.transit_index);
                    transit_backend_port.read(meta.t_bport, meta.transit_index);
                    transit_protocol.read(meta.t_proto, meta.transit_index);
                    if (meta.t_mark != 0 &&
                            meta.t_client == hdr.ipv4.dst_addr &&
                            meta.t_backend == hdr.ipv4.src_addr &&
                            meta.t_proto == hdr.ipv4.protocol &&
                            meta.t_cport == meta.l4_dport &&
                            meta.t_bport == meta.l4_sport) {
                        meta.mark = meta.t_mark;
                        service_vip.apply();
                        if (meta.rewritten) {
                            if (hdr.tcp.isValid()) {
                                if ((hdr.tcp.flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) ==
                                        (TCP_FLAG_SYN | TCP_FLAG_ACK)) {
                                    transit_state.read(meta.t_state, meta.transit_index);
                                    if (meta.t_state == TRANSIT_NEW) {
                                        transit_server_ack.write(meta.transit_index,
                                                                 hdr.tcp.seq_no + 1);
                                        transit_state.write(meta.transit_index,
                                                            TRANSIT_REPLY_SEEN);
                                    }
                                }
                            } else if (hdr.udp.isValid()) {
                                transit_state.read(meta.t_state, meta.transit_index);
                                if (meta.t_state == TRANSIT_NEW) {
                                    transit_state.write(meta.transit_index, TRANSIT_REPLY_SEEN);
                                }
                            }
                        }
                    }
                }
                if (meta.rewritten) {
                    if ((bit<32>)meta.service_id < SERVICE_COUNTER_SIZE) {
                        service_packets.count((bit<32>)meta.service_id);
                    }
                } else if ((hdr.tcp.isValid() &&
                            (hdr.tcp.flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN) ||
                           hdr.udp.isValid()) {
                    /* A direct connection starts: a slot holding exactly its tuple (a VIP
                     * connection that used it before) is stale; free it. */
                    hash(meta.transit_index, HashAlgorithm.crc16, 32w0,
                         { hdr.ipv4.src_addr, hdr.ipv4.protocol,
                           meta.l4_sport, meta.l4_dport },
                         TRANSIT_SIZE);
                    transit_marks.read(meta.t_mark, meta.transit_index);
                    transit_client.read(meta.t_client, meta.transit_index);
                    transit_backend.read(meta.t_backend, meta.transit_index);
                    transit_client_port.read(meta.t_cport, meta.transit_index);
                    transit_backend_port.read(meta.t_bport, meta.transit_index);
                    transit_protocol.read(meta.t_proto, meta.transit_index);
                    if (meta.t_mark != 0 &&
                            meta.t_client == hdr.ipv4.src_addr &&
                            meta.t_backend == hdr.ipv4.dst_addr &&
                            meta.t_proto == hdr.ipv4.protocol &&
                            meta.t_cport == meta.l4_sport &&
                            meta.t_bport == meta.l4_dport) {
                        transit_marks.write(meta.transit_index, 0);
                        transit_state.write(meta.transit_index, TRANSIT_NEW);
                    }
                }
                /* 3. Forwarding, lock and TTL. */
                ipv4_routes.apply();
            }
        } else {
            l2_forward.apply();
        }
        /* One digest call for every event: BMv2 keeps one learn list per call site, and
         * P4Runtime configures and acks the digest by name, i.e. one list. */
        if (meta.send_digest) {
            digest<conn_learn_t>(1, meta.learn);
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Egress                                                                                     */
/* ------------------------------------------------------------------------------------------ */

control P4lbEgress(inout headers_t hdr,
                   inout metadata_t meta,
                   inout standard_metadata_t standard_metadata) {

    @id(0x0100000E)
    action set_smac(bit<48> mac) {
        hdr.ethernet.src_addr = mac;
    }

    @id(0x0200000A)
    table port_smac {
        key = {
            standard_metadata.egress_port : exact;
        }
        actions = {
            set_smac;
            @defaultonly nop;
        }
        const default_action = nop();
        size = 512;
    }

    apply {
        /* Routed (IPv4) packets leave with the router MAC of their port. */
        if (hdr.ipv4.isValid()) {
            port_smac.apply();
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Checksums and deparser                                                                     */
/* ------------------------------------------------------------------------------------------ */

control P4lbComputeChecksum(inout headers_t hdr, inout metadata_t meta) {
    apply {
        update_checksum(hdr.ipv4.isValid(),
            { hdr.ipv4.version, hdr.ipv4.ihl, hdr.ipv4.diffserv, hdr.ipv4.total_len,
              hdr.ipv4.identification, hdr.ipv4.flags, hdr.ipv4.frag_offset, hdr.ipv4.ttl,
              hdr.ipv4.protocol, hdr.ipv4.src_addr, hdr.ipv4.dst_addr, hdr.ipv4.options },
            hdr.ipv4.hdr_checksum, HashAlgorithm.csum16);
        update_checksum_with_payload(hdr.tcp.isValid(),
            { hdr.ipv4.src_addr, hdr.ipv4.dst_addr, 8w0, hdr.ipv4.protocol, meta.l4_len,
              hdr.tcp.src_port, hdr.tcp.dst_port, hdr.tcp.seq_no, hdr.tcp.ack_no,
              hdr.tcp.data_offset, hdr.tcp.reserved, hdr.tcp.flags, hdr.tcp.window,
              hdr.tcp.urgent_ptr },
            hdr.tcp.checksum, HashAlgorithm.csum16);
        /* A UDP checksum of 0 means "none" and stays 0. */
        update_checksum_with_payload(hdr.udp.isValid() && hdr.udp.checksum != 0,
            { hdr.ipv4.src_addr, hdr.ipv4.dst_addr, 8w0, hdr.ipv4.protocol, meta.l4_len,
              hdr.udp.src_port, hdr.udp.dst_port, hdr.udp.length },
            hdr.udp.checksum, HashAlgorithm.csum16);
    }
}

control P4lbDeparser(packet_out packet, in headers_t hdr) {
    apply {
        packet.emit(hdr.ethernet);
        packet.emit(hdr.arp);
        packet.emit(hdr.ipv4);
        packet.emit(hdr.tcp);
        packet.emit(hdr.udp);
    }
}

V1Switch(P4lbParser(),
         P4lbVerifyChecksum(),
         P4lbIngress(),
         P4lbEgress(),
         P4lbComputeChecksum(),
         P4lbDeparser()) main;
