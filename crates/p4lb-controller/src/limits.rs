//! Every limit the controller puts on its inputs, in one place: [`crate::api`]
//! checks each request with [`check_request`] before anything else (refusal:
//! INVALID_ARGUMENT naming the limit), the gRPC server takes its decode limit
//! [`MAX_REQUEST_BYTES`] from here, the calls that add to the state check the
//! counts ([`MAX_SERVICES`], [`MAX_ROUTED_ENDPOINTS`]; endpoints with a port of their
//! own are bounded by the port range), and the
//! state loads read at most [`MAX_STATE_FILE_BYTES`] / [`MAX_CONNS_FILE_BYTES`].
//!
//! They keep one caller from growing the state file, the commit time or a list
//! reply without bound. A list reply never exceeds [`MAX_LIST_REPLY_BYTES`]
//! (below the 4 MiB gRPC clients accept by default): [`take_within`] cuts it,
//! and the reply then carries the metadata [`TRUNCATED_HEADER`].

use p4lb_proto::api;

use crate::error::{Error, Result};

/// Response metadata on a list reply that was cut to [`MAX_LIST_REPLY_BYTES`]:
/// "<returned> of <total>" (the name is shared with the API's clients).
pub use p4lb_api::TRUNCATED_HEADER;
/// Largest request the API server decodes (bytes).
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Largest list reply the API sends (bytes): below gRPC clients' default 4 MiB.
pub const MAX_LIST_REPLY_BYTES: usize = 4 * 1024 * 1024 - 64 * 1024;
/// Labels per endpoint or per request.
pub const MAX_LABELS: usize = 64;
/// Length of a label key (bytes).
pub const MAX_LABEL_KEY_LEN: usize = 253;
/// Length of a label value (bytes).
pub const MAX_LABEL_VALUE_LEN: usize = 1024;
/// Keys plus values of one endpoint's labels (bytes).
pub const MAX_LABELS_TOTAL_BYTES: usize = 4096;
/// Length of a container id (bytes); the CNI plugin checks the same limit.
pub use p4lb_api::MAX_CONTAINER_ID_LEN;
/// Length of an interface name (Linux IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;
/// Length of names: services, networks, migration ids, selectors, patterns,
/// addresses and other short strings.
pub const MAX_NAME_LEN: usize = 256;
/// Length of a path (netns path, image directory).
pub const MAX_PATH_LEN: usize = 1024;
/// Length of an endpoint key (`<container_id>/<ifname>`).
pub const MAX_KEY_LEN: usize = MAX_CONTAINER_ID_LEN + 1 + MAX_IFNAME_LEN;
/// Services in the state (endpoints are bounded by the port range, at most 509).
pub const MAX_SERVICES: usize = 256;
/// Endpoints routed behind their node in the state, whatever their state (the backend
/// id space: they take no port of the range, which bounds the other endpoints).
pub const MAX_ROUTED_ENDPOINTS: usize = 4095;
/// Nodes in the state (RegisterNode).
pub const MAX_NODES: usize = 1024;
/// Length of a node name (a DNS name).
pub const MAX_NODE_NAME_LEN: usize = 253;
/// Static backends named by one service.
pub const MAX_SERVICE_BACKENDS: usize = 512;
/// Attachments named in one garbage-collection request.
pub const MAX_GC_ATTACHMENTS: usize = 16384;
/// Largest `state.json` the controller loads.
pub const MAX_STATE_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Largest `conns.json` the controller loads.
pub const MAX_CONNS_FILE_BYTES: u64 = 256 * 1024 * 1024;

fn too_long(what: &str, len: usize, max: usize) -> Error {
    Error::invalid(format!(
        "{what} is {len} bytes, over the limit of {max} bytes"
    ))
}

/// `value` must be at most `max` bytes.
pub fn check_len(what: &str, value: &str, max: usize) -> Result<()> {
    if value.len() > max {
        return Err(too_long(what, value.len(), max));
    }
    Ok(())
}

/// A label map: count, key and value lengths, total size.
pub fn check_labels<'a>(labels: impl IntoIterator<Item = (&'a String, &'a String)>) -> Result<()> {
    let mut total = 0usize;
    let mut count = 0usize;
    for (k, v) in labels {
        count += 1;
        check_len("label key", k, MAX_LABEL_KEY_LEN)?;
        check_len(&format!("value of label {k}"), v, MAX_LABEL_VALUE_LEN)?;
        total += k.len() + v.len();
    }
    check_count("labels", count, MAX_LABELS)?;
    if total > MAX_LABELS_TOTAL_BYTES {
        return Err(Error::invalid(format!(
            "labels are {total} bytes in total, over the limit of {MAX_LABELS_TOTAL_BYTES} bytes"
        )));
    }
    Ok(())
}

/// A count against its limit (`what` in plural, e.g. "endpoints").
pub fn check_count(what: &str, count: usize, max: usize) -> Result<()> {
    if count > max {
        return Err(Error::invalid(format!(
            "{count} {what}, over the limit of {max} {what}"
        )));
    }
    Ok(())
}

fn check_identity(id: Option<&api::Identity>) -> Result<()> {
    if let Some(i) = id {
        check_len("identity.netns_path", &i.netns_path, MAX_PATH_LEN)?;
    }
    Ok(())
}

fn check_service(s: &api::Service) -> Result<()> {
    check_len("service name", &s.name, MAX_NAME_LEN)?;
    check_len("vip", &s.vip, MAX_NAME_LEN)?;
    check_len("protocol", &s.protocol, MAX_NAME_LEN)?;
    check_len("selector", &s.selector, MAX_NAME_LEN)?;
    check_len("name_pattern", &s.name_pattern, MAX_NAME_LEN)?;
    check_count("backends", s.backends.len(), MAX_SERVICE_BACKENDS)?;
    for b in &s.backends {
        check_len("backend key", b, MAX_KEY_LEN)?;
    }
    Ok(())
}

/// A request of the API, checked against the limits before it is looked at.
pub enum Request<'a> {
    Register(&'a api::RegisterEndpointRequest),
    Deregister(&'a api::DeregisterEndpointRequest),
    GetEndpoint(&'a api::GetEndpointRequest),
    UpdateMetadata(&'a api::UpdateEndpointMetadataRequest),
    GarbageCollect(&'a api::GarbageCollectRequest),
    AddService(&'a api::AddServiceRequest),
    RemoveService(&'a api::RemoveServiceRequest),
    MigrationEvent(&'a api::MigrationEventRequest),
    GetMigration(&'a api::GetMigrationRequest),
    DumpTables(&'a api::DumpTablesRequest),
    RegisterNode(&'a api::RegisterNodeRequest),
}

/// Checks every string, list and map of `r` against its limit.
pub fn check_request(r: Request<'_>) -> Result<()> {
    match r {
        Request::Register(r) => {
            check_len("container_id", &r.container_id, MAX_CONTAINER_ID_LEN)?;
            check_len("ifname", &r.ifname, MAX_IFNAME_LEN)?;
            check_len("host_ifname", &r.host_ifname, MAX_IFNAME_LEN)?;
            check_len("netns_path", &r.netns_path, MAX_PATH_LEN)?;
            check_len("network", &r.network, MAX_NAME_LEN)?;
            for (what, v) in [
                ("ip", &r.ip),
                ("mac", &r.mac),
                ("gateway", &r.gateway),
                ("restore_of_ip", &r.restore_of_ip),
                ("restore_of_mac", &r.restore_of_mac),
            ] {
                check_len(what, v, MAX_NAME_LEN)?;
            }
            check_labels(&r.labels)
        }
        Request::Deregister(r) => {
            check_len("container_id", &r.container_id, MAX_CONTAINER_ID_LEN)?;
            check_len("ifname", &r.ifname, MAX_IFNAME_LEN)
        }
        Request::GetEndpoint(r) => {
            check_len("key", &r.key, MAX_KEY_LEN)?;
            check_len("ip", &r.ip, MAX_NAME_LEN)?;
            check_identity(r.identity.as_ref())
        }
        Request::UpdateMetadata(r) => {
            check_len("key", &r.key, MAX_KEY_LEN)?;
            check_identity(r.identity.as_ref())?;
            check_labels(&r.labels)
        }
        Request::GarbageCollect(r) => {
            check_len("network", &r.network, MAX_NAME_LEN)?;
            check_count(
                "valid_attachments",
                r.valid_attachments.len(),
                MAX_GC_ATTACHMENTS,
            )?;
            for a in &r.valid_attachments {
                check_len(
                    "attachment container_id",
                    &a.container_id,
                    MAX_CONTAINER_ID_LEN,
                )?;
                check_len("attachment ifname", &a.ifname, MAX_IFNAME_LEN)?;
            }
            Ok(())
        }
        Request::AddService(r) => match &r.service {
            Some(s) => check_service(s),
            None => Ok(()),
        },
        Request::RemoveService(r) => check_len("service name", &r.name, MAX_NAME_LEN),
        Request::MigrationEvent(r) => {
            check_identity(r.identity.as_ref())?;
            check_len("migration_id", &r.migration_id, MAX_NAME_LEN)?;
            check_len("image_dir", &r.image_dir, MAX_PATH_LEN)?;
            check_len("source_ip", &r.source_ip, MAX_NAME_LEN)?;
            check_len("endpoint_key", &r.endpoint_key, MAX_KEY_LEN)?;
            check_len("target_node", &r.target_node, MAX_NODE_NAME_LEN)
        }
        Request::GetMigration(r) => check_len("migration id", &r.id, MAX_NAME_LEN),
        Request::DumpTables(r) => check_len("table", &r.table, MAX_NAME_LEN),
        Request::RegisterNode(r) => check_len("agent_address", &r.agent_address, MAX_NAME_LEN),
    }
}

/// The first items of `items` whose encoding as one repeated field fits in
/// `max` bytes, and how many items there were in all.
pub fn take_within<T: prost::Message>(
    items: impl IntoIterator<Item = T>,
    max: usize,
) -> (Vec<T>, usize) {
    let mut out = Vec::new();
    let mut size = 0usize;
    let mut total = 0usize;
    let mut full = false;
    for item in items {
        total += 1;
        if full {
            continue;
        }
        let len = item.encoded_len();
        // Field tag (1 byte for field 1) and length prefix.
        let framed = 1 + prost::encoding::encoded_len_varint(len as u64) + len;
        if size + framed > max {
            full = true;
            continue;
        }
        size += framed;
        out.push(item);
    }
    (out, total)
}

/// Network namespaces of the controller's own endpoints in which it keeps a netlink
/// socket open to read their addresses at each migration event without a thread
/// (`p4lb_netns::AddrSockets`; one file descriptor each). Beyond this many, the
/// addresses of the others are read the slower way.
pub const MAX_KEPT_NETNS_SOCKETS: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn labels(n: usize, key_len: usize, value_len: usize) -> HashMap<String, String> {
        (0..n)
            .map(|i| {
                let k = format!("{i:0key_len$}");
                (k, "v".repeat(value_len))
            })
            .collect()
    }

    #[test]
    fn labels_are_bounded_in_count_size_and_total() {
        check_labels(&labels(MAX_LABELS, 3, 10)).unwrap();
        let e = check_labels(&labels(MAX_LABELS + 1, 3, 1)).unwrap_err();
        assert!(e.to_string().contains("over the limit of 64 labels"), "{e}");
        let e = check_labels(&labels(1, MAX_LABEL_KEY_LEN + 1, 1)).unwrap_err();
        assert!(e.to_string().contains("label key is 254 bytes"), "{e}");
        let e = check_labels(&labels(1, 3, MAX_LABEL_VALUE_LEN + 1)).unwrap_err();
        assert!(
            e.to_string().contains("over the limit of 1024 bytes"),
            "{e}"
        );
        let e = check_labels(&labels(8, 3, 1000)).unwrap_err();
        assert!(
            e.to_string().contains("in total, over the limit of 4096"),
            "{e}"
        );
    }

    #[test]
    fn a_request_over_a_limit_is_invalid_and_names_the_limit() {
        let r = api::MigrationEventRequest {
            image_dir: "/".repeat(MAX_PATH_LEN + 1),
            ..Default::default()
        };
        let e = check_request(Request::MigrationEvent(&r)).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("image_dir is 1025 bytes, over the limit of 1024 bytes"),
            "{msg}"
        );
        assert_eq!(tonic::Status::from(e).code(), tonic::Code::InvalidArgument);
        let r = api::AddServiceRequest {
            service: Some(api::Service {
                name: "s".into(),
                backends: vec![String::from("k/eth0"); MAX_SERVICE_BACKENDS + 1],
                ..Default::default()
            }),
            replace: false,
        };
        let e = check_request(Request::AddService(&r)).unwrap_err();
        assert!(
            e.to_string().contains("over the limit of 512 backends"),
            "{e}"
        );
        let r = api::GarbageCollectRequest {
            network: "n".repeat(MAX_NAME_LEN + 1),
            ..Default::default()
        };
        assert!(check_request(Request::GarbageCollect(&r)).is_err());
        check_request(Request::Register(&api::RegisterEndpointRequest::default())).unwrap();
    }

    #[test]
    fn list_replies_are_cut_to_the_byte_limit() {
        let rows: Vec<api::TableRow> = (0..100)
            .map(|i| api::TableRow {
                table: "t".into(),
                r#match: format!("{i:090}"),
                action: String::new(),
            })
            .collect();
        let one = api::DumpTablesResponse {
            rows: rows[..1].to_vec(),
        };
        let per_row = prost::Message::encoded_len(&one);
        let (kept, total) = take_within(rows.clone(), per_row * 10);
        assert_eq!((kept.len(), total), (10, 100));
        let reply = api::DumpTablesResponse { rows: kept };
        assert!(prost::Message::encoded_len(&reply) <= per_row * 10);
        let (kept, total) = take_within(rows, usize::MAX);
        assert_eq!((kept.len(), total), (100, 100));
    }
}
