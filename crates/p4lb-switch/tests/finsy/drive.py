"""Drives a P4Runtime target running p4lb.p4 with finsy, a client p4lb did not write.

Run by tests/finsy.rs against p4lb-switch and, when present, BMv2's simple_switch_grpc:
`drive.py ADDRESS P4INFO_TXTPB DEVICE_CONFIG DEVICE_ID`. Prints one line per step;
"INJECT" asks the test to send a new connection's handshake through the pipeline; "OK"
closes a successful run. Any failure of a step raises (non-zero exit, traceback on stderr).

"PROBE <name> <answer>" lines are the target's answers to requests where targets are known
to differ (the status code of the update, or what a read or arbitration showed); they never
fail the run: the test compares them with the specification's answers and between targets.
"""

import asyncio
import sys
from pathlib import Path

import finsy as fy
import grpc
from finsy.grpcutil import GRPCStatusCode
from finsy.p4client import P4ClientError, P4RpcStatus
from finsy.proto import p4r, p4r_grpc

VIP = "10.96.0.1"
CLIENT = "10.0.0.1"


def step(name):
    print(name, flush=True)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def vip_service():
    return fy.P4TableEntry(
        "vip_services",
        match=fy.P4TableMatch(
            {"hdr.ipv4.dst_addr": VIP, "hdr.ipv4.protocol": 6, "meta.l4_dport": 80}
        ),
        action=fy.P4TableAction("set_service", service_id=1, slot_count=7, target_port=8080),
    )


def backend(backend_id):
    return fy.P4TableEntry(
        "backends",
        match=fy.P4TableMatch({"meta.backend_id": backend_id}),
        action=fy.P4TableAction(
            "backend_forward", ip="10.1.0.4", dmac="02:00:00:00:00:04", port=2
        ),
    )


def service_vip():
    # The reverse path of service 1 (mark 2): the backend's SYN-ACK goes back from the VIP.
    return fy.P4TableEntry(
        "service_vip",
        match=fy.P4TableMatch({"meta.mark": 2}),
        action=fy.P4TableAction("rewrite_src", vip=VIP, vport=80, service_id=1),
    )


def slot(n):
    return fy.P4TableEntry(
        "maglev_slots",
        match=fy.P4TableMatch({"meta.service_id": 1, "meta.slot": n}),
        action=fy.P4TableAction("set_backend", backend_id=4),
    )


async def table_entries(sw):
    return [e async for e in sw.read(fy.P4TableEntry())]


# Probes: one request each where targets are known to differ. Each prints its answer.

PRIMARY_ID = 10


def probe(name, answer):
    print(f"PROBE {name} {answer}", flush=True)


def status_of(err):
    """The code an update got: its per-update error when there is one, else the RPC's."""
    st = P4RpcStatus.from_rpc_error(err)
    for e in st.details.values():
        if e.canonical_code != GRPCStatusCode.OK:
            return e.canonical_code.name
    return st.code.name


def election(n):
    return p4r.Uint128(high=0, low=n)


async def write_code(stub, device_id, updates, election_id=PRIMARY_ID):
    req = p4r.WriteRequest(device_id=device_id, updates=updates, atomicity=0)
    if election_id is not None:
        req.election_id.CopyFrom(election(election_id))
    try:
        await stub.Write(req)
        return "OK"
    except grpc.aio.AioRpcError as err:
        return status_of(err)


async def read_entities(stub, device_id, entity):
    """("OK", entities) or (code, [])."""
    got = []
    try:
        async for reply in stub.Read(p4r.ReadRequest(device_id=device_id, entities=[entity])):
            got.extend(reply.entities)
        return "OK", got
    except grpc.aio.AioRpcError as err:
        return status_of(err), []


def insert(entity):
    return p4r.Update(type=p4r.Update.INSERT, entity=entity)


def delete(entity):
    return p4r.Update(type=p4r.Update.DELETE, entity=entity)


async def write_probes(sw, stub, device_id):
    """Writes and reads while finsy's session (election id PRIMARY_ID) is primary."""
    schema = sw.p4info
    # A normal entry with an @defaultonly action (the spec: PERMISSION_DENIED).
    e = vip_service().encode(schema)
    e.table_entry.action.action.action_id = schema.actions["nop"].id
    del e.table_entry.action.action.params[:]
    probe("defaultonly_action_in_entry", await write_code(stub, device_id, [insert(e)]))
    # An action parameter given as an empty bytestring (INVALID_ARGUMENT).
    e = backend(6).encode(schema)
    e.table_entry.action.action.params[0].value = b""
    probe("empty_bytestring", await write_code(stub, device_id, [insert(e)]))
    # A value wider than its field: port is bit<9> (OUT_OF_RANGE).
    e = backend(6).encode(schema)
    for p in e.table_entry.action.action.params:
        if p.param_id == 3:
            p.value = b"\x7f\xff"
    probe("value_too_wide", await write_code(stub, device_id, [insert(e)]))
    # A negative counter index (INVALID_ARGUMENT).
    ce = p4r.Entity()
    ce.counter_entry.counter_id = schema.counters["drops"].id
    ce.counter_entry.index.index = -1
    code, _ = await read_entities(stub, device_id, ce)
    probe("negative_counter_index", code)
    # A multicast group: p4lb.p4 replicates nothing (p4lb-switch: UNIMPLEMENTED).
    mg = p4r.Entity()
    g = mg.packet_replication_engine_entry.multicast_group_entry
    g.multicast_group_id = 7
    g.replicas.add(egress_port=1, instance=1)
    code = await write_code(stub, device_id, [insert(mg)])
    probe("write_multicast_group", code)
    if code == "OK":
        await write_code(stub, device_id, [delete(mg)])
    # A wildcard read of a kind p4lb.p4 has none of (an empty read).
    me = p4r.Entity()
    me.meter_entry.SetInParent()
    code, got = await read_entities(stub, device_id, me)
    probe("read_meter_entries", f"{code}:{len(got)}")


async def commit_probe(sw, stub, device_id):
    """VERIFY_AND_SAVE, a write, COMMIT: the spec keeps the write (the entry is read back)."""
    cfg = await stub.GetForwardingPipelineConfig(
        p4r.GetForwardingPipelineConfigRequest(
            device_id=device_id,
            response_type=p4r.GetForwardingPipelineConfigRequest.ALL,
        )
    )
    try:
        await stub.SetForwardingPipelineConfig(
            p4r.SetForwardingPipelineConfigRequest(
                device_id=device_id,
                election_id=election(PRIMARY_ID),
                action=p4r.SetForwardingPipelineConfigRequest.VERIFY_AND_SAVE,
                config=cfg.config,
            )
        )
    except grpc.aio.AioRpcError as err:
        probe("commit_after_verify_and_save", f"save:{status_of(err)}")
        return
    code = await write_code(stub, device_id, [insert(backend(9).encode(sw.p4info))])
    try:
        await stub.SetForwardingPipelineConfig(
            p4r.SetForwardingPipelineConfigRequest(
                device_id=device_id,
                election_id=election(PRIMARY_ID),
                action=p4r.SetForwardingPipelineConfigRequest.COMMIT,
            )
        )
    except grpc.aio.AioRpcError as err:
        probe("commit_after_verify_and_save", f"commit:{status_of(err)}")
        return
    ids = [
        e.table_entry.match[0].exact.value
        for e in await table_entries_raw(stub, device_id, sw.p4info.tables["backends"].id)
    ]
    kept = any(int.from_bytes(v, "big") == 9 for v in ids)
    probe("commit_after_verify_and_save", f"write:{code}:{'kept' if kept else 'dropped'}")


async def table_entries_raw(stub, device_id, table_id):
    e = p4r.Entity()
    e.table_entry.table_id = table_id
    _, got = await read_entities(stub, device_id, e)
    return got


async def open_stream(stub, device_id, election_id):
    """A StreamChannel that has sent its arbitration; returns (call, first answer's code)."""
    call = stub.StreamChannel()
    req = p4r.StreamMessageRequest()
    req.arbitration.device_id = device_id
    if election_id is not None:
        req.arbitration.election_id.CopyFrom(election(election_id))
    await call.write(req)
    reply = await asyncio.wait_for(call.read(), 5)
    return call, reply.arbitration.status.code


async def arbitration_probes(sw_entity, stub, device_id):
    """After finsy has gone: who may write once a primary leaves a lower backup behind, and
    whether a stream without an election id is ever primary. Each probe writes one entry and
    removes it if it went in."""
    # A primary (20) and a backup (5); the primary leaves.
    a, _ = await open_stream(stub, device_id, 20)
    b, _ = await open_stream(stub, device_id, 5)
    a.cancel()
    await asyncio.sleep(0.5)
    code = await write_code(stub, device_id, [insert(sw_entity)], election_id=5)
    probe("backup_after_primary_leaves", code)
    if code == "OK":
        await write_code(stub, device_id, [delete(sw_entity)], election_id=5)
    b.cancel()
    await asyncio.sleep(0.5)
    # A stream without an election id, alone on the switch.
    c, _ = await open_stream(stub, device_id, None)
    await asyncio.sleep(0.2)
    code = await write_code(stub, device_id, [insert(sw_entity)], election_id=None)
    probe("stream_without_election_id", code)
    if code == "OK":
        await write_code(stub, device_id, [delete(sw_entity)], election_id=None)
    c.cancel()


async def main(address, p4info, device_config, device_id):
    opts = fy.SwitchOptions(
        p4info=Path(p4info),
        p4blob=Path(device_config),
        device_id=device_id,
        initial_election_id=10,
        p4force=True,
    )
    async with fy.Switch("p4lb", address, opts) as sw:
        # Arbitration and SetForwardingPipelineConfig (the P4Info and a dummy device config).
        check(sw.is_primary, "finsy did not become primary")
        step("ARBITRATION primary")
        async with fy.Switch("p4lb-backup", address, opts(initial_election_id=5)) as b:
            check(not b.is_primary, "a lower election id became primary")
        step("ARBITRATION backup")
        # What programs do first: wipe the switch, every entity kind included.
        await sw.delete_all()
        step("DELETE_ALL empty")
        # Table writes and a wildcard read of every table.
        entries = [vip_service(), backend(4), service_vip()] + [slot(n) for n in range(7)]
        await sw.insert(entries)
        got = await table_entries(sw)
        check(len(got) == len(entries), f"wildcard read: {len(got)} entries, want {len(entries)}")
        step(f"WRITE_READ {len(got)}")
        # A batch with per-update errors: the new entry goes in, the duplicate fails alone.
        try:
            await sw.insert([backend(5), backend(4)])
            raise AssertionError("a duplicate insert succeeded")
        except P4ClientError as ex:
            errs = ex.details
            check(
                1 in errs and errs[1].canonical_code == GRPCStatusCode.ALREADY_EXISTS,
                f"per-update errors: {errs}",
            )
            check(0 not in errs or errs[0].canonical_code == GRPCStatusCode.OK, f"{errs}")
        check(len(await table_entries(sw)) == len(entries) + 1, "the valid update was lost")
        step("BATCH_ERRORS")
        channel = grpc.aio.insecure_channel(address)
        stub = p4r_grpc.P4RuntimeStub(channel)
        await write_probes(sw, stub, device_id)
        # Digests: configure, have a new connection learned, receive the list and ack it.
        await sw.insert(
            [
                fy.P4DigestEntry(
                    "conn_learn",
                    max_list_size=1,
                    max_timeout_ns=0,
                    ack_timeout_ns=1_000_000_000,
                )
            ]
        )
        digests = sw.read_digests("conn_learn")
        first = asyncio.ensure_future(anext(digests))
        step("INJECT")
        dl = await asyncio.wait_for(first, 10)
        check(len(dl) == 1, f"digest list of {len(dl)} messages")
        msg = dl[0]
        check(msg["src_port"] == 1000 and msg["backend_id"] == 4, f"digest {msg}")
        await sw.write([dl.ack()])
        step(f"DIGEST list_id={dl.list_id}")
        await commit_probe(sw, stub, device_id)
        leftover = backend(8).encode(sw.p4info)
        # Wipe again: tables, default entries, digest config.
        await sw.delete_all()
        left = await table_entries(sw)
        check(not left, f"{len(left)} entries left after delete_all")
        step("DELETE_ALL done")
    await arbitration_probes(leftover, stub, device_id)
    await channel.close()
    step("OK")


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])), 60))
