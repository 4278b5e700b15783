//! Which client connections survived a checkpoint/restore, from the
//! `p4lb-testapp client` reports before and after it.

use p4lb_testapp::report::{ConnState, Report};

use crate::error::{Error, Result};

/// Compares the interim report (before the checkpoint) with the final one:
/// returns the connections that were open before and completed more requests,
/// cleanly, after; and the requests done after.
pub fn judge(before: &Report, after: &Report) -> Result<(u64, u64)> {
    if before.connections.len() != after.connections.len() {
        return Err(Error::Scenario(format!(
            "reports disagree on the number of connections ({} vs {})",
            before.connections.len(),
            after.connections.len()
        )));
    }
    let mut survived = 0;
    for (b, a) in before.connections.iter().zip(&after.connections) {
        if b.state == ConnState::Open
            && a.state == ConnState::Done
            && a.requests_done > b.requests_done
            && a.is_clean()
        {
            survived += 1;
        }
    }
    Ok((
        survived,
        after.totals.requests_done - before.totals.requests_done,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use p4lb_testapp::report::ConnReport;

    fn conn(id: usize, state: ConnState, done: u64) -> ConnReport {
        let mut c = ConnReport::new(id);
        c.state = state;
        c.requests_done = done;
        c
    }

    #[test]
    fn judge_counts_connections_that_kept_going() {
        let before = Report::new(
            false,
            1,
            vec![
                conn(0, ConnState::Open, 5),
                conn(1, ConnState::Open, 5),
                conn(2, ConnState::Open, 5),
            ],
        );
        let mut reset = conn(1, ConnState::Reset, 5);
        reset.resets = 1;
        let after = Report::new(
            true,
            2,
            vec![
                conn(0, ConnState::Done, 9),
                reset,
                conn(2, ConnState::Done, 5),
            ],
        );
        let (survived, extra) = judge(&before, &after).unwrap();
        assert_eq!(survived, 1);
        assert_eq!(extra, 4);
        let short = Report::new(true, 2, vec![]);
        assert!(judge(&before, &short).is_err());
    }
}
