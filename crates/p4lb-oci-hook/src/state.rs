//! The OCI container state a runtime writes to a hook's stdin, and the
//! annotations of the container (from the state, or else the bundle's config.json).

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use oci_spec::runtime::{ContainerState, Spec, State};

/// A state document is a few KiB; refuse anything absurd.
const MAX_STATE_BYTES: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("reading the container state from stdin: {0}")]
    Read(std::io::Error),
    #[error("the container state on stdin is larger than {MAX_STATE_BYTES} bytes")]
    TooLarge,
    #[error("the container state on stdin is not OCI state JSON: {0}")]
    Parse(serde_json::Error),
    #[error("the container state has no id")]
    NoId,
    #[error("reading {path}: {detail}")]
    Bundle { path: String, detail: String },
}

pub fn read_state(mut input: impl Read) -> Result<State, StateError> {
    let mut buf = Vec::new();
    input
        .by_ref()
        .take(MAX_STATE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(StateError::Read)?;
    if buf.len() as u64 > MAX_STATE_BYTES {
        return Err(StateError::TooLarge);
    }
    parse_state(&buf)
}

pub fn parse_state(bytes: &[u8]) -> Result<State, StateError> {
    let st: State = serde_json::from_slice(bytes).map_err(StateError::Parse)?;
    if st.id().is_empty() {
        return Err(StateError::NoId);
    }
    Ok(st)
}

/// The container's annotations: those in the state when it has any, else the
/// ones in `<bundle>/config.json` (older runtimes leave them out of the state).
pub fn annotations(st: &State) -> Result<HashMap<String, String>, StateError> {
    if let Some(a) = st.annotations().as_ref().filter(|a| !a.is_empty()) {
        return Ok(a.clone());
    }
    let bundle = st.bundle();
    if bundle.as_os_str().is_empty() {
        return Ok(HashMap::new());
    }
    let cfg = Path::new(bundle).join("config.json");
    if !cfg.exists() {
        return Ok(HashMap::new());
    }
    let spec = Spec::load(&cfg).map_err(|e| StateError::Bundle {
        path: cfg.display().to_string(),
        detail: e.to_string(),
    })?;
    Ok(spec.annotations().clone().unwrap_or_default())
}

/// The hook stage a state stands for (the runtime does not say which stage runs).
pub fn stage_of(st: &State) -> &'static str {
    match st.status() {
        ContainerState::Creating => "createRuntime",
        ContainerState::Created => "prestart/createContainer/startContainer",
        ContainerState::Running => "poststart",
        ContainerState::Stopped => "poststop",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_runtime_state() {
        let j = br#"{"ociVersion":"1.0.2","id":"c1","status":"running","pid":4242,
            "bundle":"/b","annotations":{"io.kubernetes.pod.name":"web-0"}}"#;
        let st = read_state(&j[..]).unwrap();
        assert_eq!(st.id(), "c1");
        assert_eq!(*st.pid(), Some(4242));
        assert_eq!(stage_of(&st), "poststart");
        assert_eq!(annotations(&st).unwrap()["io.kubernetes.pod.name"], "web-0");
    }

    #[test]
    fn annotations_fall_back_to_the_bundle() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("config.json"),
            r#"{"ociVersion":"1.0.2","annotations":{"p4lb.io/checkpoint":"migrate"}}"#,
        )
        .unwrap();
        let j = format!(
            r#"{{"ociVersion":"1.0.2","id":"c2","status":"creating","pid":1,"bundle":{:?}}}"#,
            d.path()
        );
        let st = parse_state(j.as_bytes()).unwrap();
        assert_eq!(annotations(&st).unwrap()["p4lb.io/checkpoint"], "migrate");
        std::fs::write(d.path().join("config.json"), "{not json").unwrap();
        assert!(matches!(annotations(&st), Err(StateError::Bundle { .. })));
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(matches!(parse_state(b"nope"), Err(StateError::Parse(_))));
        assert!(matches!(parse_state(b"{}"), Err(StateError::NoId)));
        let big = vec![b' '; (MAX_STATE_BYTES + 10) as usize];
        assert!(matches!(read_state(&big[..]), Err(StateError::TooLarge)));
    }
}
