"""Drives p4lb-switch with finsy, a P4Runtime client p4lb did not write.

Run by tests/finsy.rs: `drive.py ADDRESS P4INFO_TXTPB DEVICE_CONFIG DEVICE_ID`. Prints one line per step;
"INJECT" asks the test to send a new connection's handshake through the pipeline; "OK"
closes a successful run. Any failure raises (non-zero exit, traceback on stderr).
"""

import asyncio
import sys
from pathlib import Path

import finsy as fy
from finsy.grpcutil import GRPCStatusCode
from finsy.p4client import P4ClientError

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
        # Wipe again: tables, default entries, digest config.
        await sw.delete_all()
        left = await table_entries(sw)
        check(not left, f"{len(left)} entries left after delete_all")
        step("DELETE_ALL done")
    step("OK")


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])), 60))
