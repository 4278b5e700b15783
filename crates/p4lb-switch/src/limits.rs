//! What one client may ask of the switch: the size of a gRPC message, of a pipeline config
//! (P4Info objects, table sizes, counter and register cells) and of a table entry.
//!
//! Every limit is checked before anything is allocated for it, and exceeding one is a
//! refusal (RESOURCE_EXHAUSTED or INVALID_ARGUMENT with the limit in the message), never
//! an abort. The limits leave p4lb.p4 (`p4lb_p4::P4INFO_TXTPB`) ample room: its largest
//! table holds 65 536 entries, all its tables together about 210 000, its counters and
//! registers about 530 000 cells, and its P4Info is a few kilobytes.

use p4lb_proto::p4info::P4Info;
use p4lb_proto::p4runtime as p4;
use prost::Message;

/// Largest gRPC message the server decodes or encodes (64 MiB). A Write of several
/// thousand entries or a pipeline config with its BMv2 JSON stays far below it.
pub const MAX_GRPC_MESSAGE_BYTES: usize = 64 << 20;

/// Largest P4Info (encoded protobuf) a pipeline config may carry (1 MiB).
pub const MAX_P4INFO_BYTES: usize = 1 << 20;

/// Largest `p4_device_config` (the target-specific blob the switch keeps and reports back,
/// 16 MiB).
pub const MAX_DEVICE_CONFIG_BYTES: usize = 16 << 20;

/// Most tables a P4Info may declare (p4lb.p4 has 10).
pub const MAX_TABLES: usize = 64;

/// Most actions a P4Info may declare (p4lb.p4 has 15).
pub const MAX_ACTIONS: usize = 256;

/// Most entries one table may be declared to hold (P4Info `size`); a table declared with
/// size 0 (unspecified) holds at most this many (2^20; p4lb.p4's largest is 2^16).
pub const MAX_TABLE_ENTRIES: u64 = 1 << 20;

/// Most entries all tables together may be declared to hold (2^21).
pub const MAX_TOTAL_TABLE_ENTRIES: u64 = 1 << 21;

/// Most counter and register cells a P4Info may declare in total (2^22: at most 64 MiB of
/// counters).
pub const MAX_STATE_CELLS: u64 = 1 << 22;

/// Largest `metadata` of one table entry (1 KiB). The switch stores it with the entry and
/// returns it on Read; p4lb's controller sets none.
pub const MAX_ENTRY_METADATA_BYTES: usize = 1024;

/// Largest encoded `google.rpc.Status` a failed Write carries in its details (4 KiB). The
/// status travels in the `grpc-status-details-bin` header, base64-encoded, and must fit the
/// peer's header list limit (8 KiB in gRPC C core, 16 KiB in hyper): the per-update errors
/// of the first updates are reported one by one while they fit, and one summary error
/// stands for the rest.
pub const MAX_WRITE_ERROR_DETAILS_BYTES: usize = 4096;

/// Longest message of one per-update error in a failed Write's details (bytes; longer
/// messages are cut at a character boundary).
pub const MAX_WRITE_ERROR_MESSAGE_BYTES: usize = 160;

/// Largest ReadResponse (encoded bytes, 1 MiB): a wildcard Read streams as many responses
/// as it takes, each below this and below clients' default 4 MiB message limit.
pub const MAX_READ_RESPONSE_BYTES: usize = 1 << 20;

/// Most `conn_learn` digest messages the digest engine holds, waiting to be sent or to be
/// acknowledged (its buffer plus its un-acked lists). Beyond it new messages are dropped
/// and counted: they are reported again by the connection's next packet.
pub const MAX_PENDING_DIGEST_MESSAGES: usize = 65536;

/// Most messages in one DigestList when the DigestEntry sets no `max_list_size` (0).
pub const MAX_DIGEST_LIST_MESSAGES: usize = 4096;

/// A pipeline config over one of the limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("the P4Info is {bytes} bytes; this switch accepts at most {MAX_P4INFO_BYTES}")]
    P4InfoSize { bytes: usize },
    #[error(
        "the device config is {bytes} bytes; this switch accepts at most {MAX_DEVICE_CONFIG_BYTES}"
    )]
    DeviceConfigSize { bytes: usize },
    #[error("the P4Info declares {count} tables; this switch accepts at most {MAX_TABLES}")]
    Tables { count: usize },
    #[error("the P4Info declares {count} actions; this switch accepts at most {MAX_ACTIONS}")]
    Actions { count: usize },
    #[error(
        "table `{name}` is declared with {size} entries; this switch holds at most \
         {MAX_TABLE_ENTRIES} per table"
    )]
    TableSize { name: String, size: i64 },
    #[error(
        "the tables are declared with {total} entries in total; this switch holds at most \
         {MAX_TOTAL_TABLE_ENTRIES}"
    )]
    TotalEntries { total: u64 },
    #[error(
        "{kind} `{name}` is declared with {size} cells; this switch holds at most \
         {MAX_STATE_CELLS} counter and register cells in total"
    )]
    Cells {
        kind: &'static str,
        name: String,
        size: i64,
    },
    #[error(
        "the counters and registers are declared with {total} cells in total; this switch \
         holds at most {MAX_STATE_CELLS}"
    )]
    TotalCells { total: u64 },
}

fn name(p: &Option<p4lb_proto::p4info::Preamble>) -> String {
    p.as_ref().map(|p| p.name.clone()).unwrap_or_default()
}

/// The entries a table declared with `size` may hold (0 or less: unspecified).
pub fn table_capacity(size: i64) -> u64 {
    if size <= 0 {
        MAX_TABLE_ENTRIES
    } else {
        size as u64
    }
}

/// Checks a pipeline config against the limits, before it is bound or allocated.
pub fn check_pipeline(config: &p4::ForwardingPipelineConfig) -> Result<(), LimitError> {
    if config.p4_device_config.len() > MAX_DEVICE_CONFIG_BYTES {
        return Err(LimitError::DeviceConfigSize {
            bytes: config.p4_device_config.len(),
        });
    }
    match &config.p4info {
        Some(info) => check_p4info(info),
        None => Ok(()),
    }
}

/// Checks a P4Info against the limits.
pub fn check_p4info(info: &P4Info) -> Result<(), LimitError> {
    let bytes = info.encoded_len();
    if bytes > MAX_P4INFO_BYTES {
        return Err(LimitError::P4InfoSize { bytes });
    }
    if info.tables.len() > MAX_TABLES {
        return Err(LimitError::Tables {
            count: info.tables.len(),
        });
    }
    if info.actions.len() > MAX_ACTIONS {
        return Err(LimitError::Actions {
            count: info.actions.len(),
        });
    }
    let mut entries = 0u64;
    for t in &info.tables {
        if t.size > 0 && t.size as u64 > MAX_TABLE_ENTRIES {
            return Err(LimitError::TableSize {
                name: name(&t.preamble),
                size: t.size,
            });
        }
        entries += table_capacity(t.size);
    }
    if entries > MAX_TOTAL_TABLE_ENTRIES {
        return Err(LimitError::TotalEntries { total: entries });
    }
    let counters = info
        .counters
        .iter()
        .map(|c| ("counter", name(&c.preamble), c.size));
    let registers = info
        .registers
        .iter()
        .map(|r| ("register", name(&r.preamble), i64::from(r.size)));
    let mut cells = 0u64;
    for (kind, name, size) in counters.chain(registers) {
        // A size of 0 or less is the binding's to refuse (INVALID_ARGUMENT).
        let size_cells = size.max(0) as u64;
        if size_cells > MAX_STATE_CELLS {
            return Err(LimitError::Cells { kind, name, size });
        }
        cells += size_cells;
    }
    if cells > MAX_STATE_CELLS {
        return Err(LimitError::TotalCells { total: cells });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p4lb_fits_the_limits_with_room() {
        let info = p4lb_p4::p4info().expect("checked-in P4Info");
        check_p4info(&info).expect("p4lb.p4 within the limits");
        assert!(info.encoded_len() * 16 < MAX_P4INFO_BYTES);
        assert!(info.tables.len() * 4 < MAX_TABLES);
        assert!(info.actions.len() * 4 < MAX_ACTIONS);
        let largest = info.tables.iter().map(|t| t.size as u64).max().unwrap_or(0);
        assert!(largest * 16 <= MAX_TABLE_ENTRIES);
        let total: u64 = info.tables.iter().map(|t| t.size as u64).sum();
        assert!(total * 8 < MAX_TOTAL_TABLE_ENTRIES);
        let cells: u64 = info.counters.iter().map(|c| c.size as u64).sum::<u64>()
            + info.registers.iter().map(|r| r.size as u64).sum::<u64>();
        // The eight transit registers (65 536 cells each) make most of it.
        assert!(cells * 7 < MAX_STATE_CELLS);
    }

    #[test]
    fn an_unsized_table_holds_the_per_table_limit() {
        assert_eq!(table_capacity(0), MAX_TABLE_ENTRIES);
        assert_eq!(table_capacity(-1), MAX_TABLE_ENTRIES);
        assert_eq!(table_capacity(512), 512);
    }
}
