//! Polling with a deadline.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Polls `ok` every 100 ms for up to `secs` seconds.
pub fn until(secs: u64, what: &str, mut ok: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: what.to_string(),
                secs,
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
