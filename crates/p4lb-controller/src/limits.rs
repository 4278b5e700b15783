//! Every limit the controller puts on its inputs, in one place: the API checks
//! requests against them ([`crate::api`] calls [`check_register`] and friends
//! before anything else), the gRPC server takes its decode limit from here, and
//! the state loads read at most [`MAX_STATE_FILE_BYTES`] / [`MAX_CONNS_FILE_BYTES`].
//!
//! They keep one caller from growing the state file, the commit time or a list
//! reply without bound: with them, a list of endpoints at the port limit stays
//! below the 4 MiB that gRPC clients accept by default, and a list reply that
//! would still exceed [`MAX_LIST_REPLY_BYTES`] is refused with RESOURCE_EXHAUSTED
//! rather than sent.

use std::collections::HashMap;

use crate::error::{Error, Result};

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
/// Length of a container id (bytes).
pub const MAX_CONTAINER_ID_LEN: usize = 256;
/// Length of an interface name (Linux IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;
/// Length of names: services, networks, migration ids, selectors, patterns,
/// addresses and other short strings.
pub const MAX_NAME_LEN: usize = 256;
/// Length of a path (netns path, image directory).
pub const MAX_PATH_LEN: usize = 4096;
/// Endpoints in the state (also bounded by the port range).
pub const MAX_ENDPOINTS: usize = 4096;
/// Services in the state.
pub const MAX_SERVICES: usize = 256;
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
pub fn check_labels(labels: &HashMap<String, String>) -> Result<()> {
    if labels.len() > MAX_LABELS {
        return Err(Error::invalid(format!(
            "{} labels, over the limit of {MAX_LABELS} labels",
            labels.len()
        )));
    }
    let mut total = 0usize;
    for (k, v) in labels {
        check_len("label key", k, MAX_LABEL_KEY_LEN)?;
        check_len(&format!("value of label {k}"), v, MAX_LABEL_VALUE_LEN)?;
        total += k.len() + v.len();
    }
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
