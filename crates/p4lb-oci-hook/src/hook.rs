//! One hook invocation: container state → endpoint labels at the controller.

use std::time::Duration;

use oci_spec::runtime::{ContainerState, State};
use p4lb_api::api::{Identity, UpdateEndpointMetadataRequest};
use p4lb_api::{ApiError, Client};

use crate::labels::from_annotations;
use crate::state::{annotations, stage_of, StateError};

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Controller(#[from] ApiError),
}

pub struct HookConfig {
    pub socket: std::path::PathBuf,
    pub connect_timeout: Duration,
    pub call_timeout: Duration,
}

/// What the hook did, for the log.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Skipped(String),
    NotAnEndpoint,
    Updated { key: String, labels: usize },
}

pub async fn handle(st: &State, cfg: &HookConfig) -> Result<Outcome, HookError> {
    let stage = stage_of(st);
    let pid = match (st.status(), st.pid()) {
        (ContainerState::Stopped, _) => {
            return Ok(Outcome::Skipped(format!(
                "{stage}: container stopped (its endpoint goes with CNI DEL)"
            )))
        }
        (_, Some(p)) if *p > 0 => *p as u32,
        _ => return Ok(Outcome::Skipped(format!("{stage}: no container pid yet"))),
    };
    let ann = annotations(st)?;
    let labels = from_annotations(st.id(), &ann);
    for r in &labels.refused {
        tracing::warn!(container = %st.id(), "annotation not used: {r}");
    }
    let c = Client::connect(&cfg.socket, cfg.connect_timeout, cfg.call_timeout).await?;
    let Some(ep) = c.endpoint_of_pid(pid).await? else {
        return Ok(Outcome::NotAnEndpoint);
    };
    let n = labels.labels.len();
    let req = UpdateEndpointMetadataRequest {
        identity: Some(Identity {
            pid,
            netns_path: String::new(),
        }),
        key: ep.key.clone(),
        labels: labels.labels.into_iter().collect(),
    };
    let ep = c.update_endpoint_metadata(req).await?;
    Ok(Outcome::Updated {
        key: ep.key,
        labels: n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::parse_state;

    fn cfg(dir: &std::path::Path) -> HookConfig {
        HookConfig {
            socket: dir.join("none.sock"),
            connect_timeout: Duration::from_millis(300),
            call_timeout: Duration::from_millis(300),
        }
    }

    #[tokio::test]
    async fn stopped_or_pidless_containers_need_no_controller() {
        let d = tempfile::tempdir().unwrap();
        for j in [
            r#"{"ociVersion":"1.0.2","id":"c","status":"stopped","bundle":"/nonexistent"}"#,
            r#"{"ociVersion":"1.0.2","id":"c","status":"creating","bundle":"/nonexistent"}"#,
            r#"{"ociVersion":"1.0.2","id":"c","status":"running","pid":0,"bundle":"/x"}"#,
        ] {
            let st = parse_state(j.as_bytes()).unwrap();
            let o = handle(&st, &cfg(d.path())).await.unwrap();
            assert!(matches!(o, Outcome::Skipped(_)), "{j}: {o:?}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_controller_is_a_controller_error() {
        let d = tempfile::tempdir().unwrap();
        let j = format!(
            r#"{{"ociVersion":"1.0.2","id":"c","status":"running","pid":{},"bundle":"/x","annotations":{{"a":"b"}}}}"#,
            std::process::id()
        );
        let st = parse_state(j.as_bytes()).unwrap();
        let r = handle(&st, &cfg(d.path())).await;
        assert!(matches!(r, Err(HookError::Controller(_))), "{r:?}");
    }
}
