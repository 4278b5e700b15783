//! Client of the p4lb controller API over its Unix socket, with bounded
//! connect and per-call timeouts (an action script must never hang CRIU).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use p4lb_proto::api::controller_client::ControllerClient;
use p4lb_proto::api::{
    Endpoint, GetEndpointRequest, Identity, Migration, MigrationEventRequest,
    UpdateEndpointMetadataRequest,
};
use tonic::transport::{Channel, Endpoint as TonicEndpoint, Uri};

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// Could not talk to the controller at all (down, socket missing, timeout).
    #[error("p4lb controller at {socket} is unavailable: {detail}")]
    Unavailable { socket: PathBuf, detail: String },
    /// The controller answered with an error.
    #[error("p4lb controller refused {call} ({code:?}): {message}")]
    Refused {
        call: &'static str,
        code: tonic::Code,
        message: String,
    },
}

impl ControllerError {
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Self::Refused {
                code: tonic::Code::NotFound,
                ..
            }
        )
    }
}

pub struct Controller {
    client: ControllerClient<Channel>,
    call_timeout: Duration,
    socket: PathBuf,
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    msg
}

impl Controller {
    pub async fn connect(
        socket: &Path,
        connect_timeout: Duration,
        call_timeout: Duration,
    ) -> Result<Self, ControllerError> {
        let path = socket.to_path_buf();
        let connector = tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(s))
            }
        });
        // The authority is unused on a Unix socket; it only has to be a valid URI.
        let ep = TonicEndpoint::from_static("http://p4lb-controller")
            .connect_timeout(connect_timeout)
            .timeout(call_timeout);
        let unavailable = |detail: String| ControllerError::Unavailable {
            socket: socket.to_path_buf(),
            detail,
        };
        let channel = tokio::time::timeout(connect_timeout, ep.connect_with_connector(connector))
            .await
            .map_err(|_| unavailable(format!("no connection within {connect_timeout:?}")))?
            .map_err(|e| unavailable(chain(&e)))?;
        Ok(Self {
            client: ControllerClient::new(channel),
            call_timeout,
            socket: socket.to_path_buf(),
        })
    }

    async fn call<T>(
        &self,
        call: &'static str,
        fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, ControllerError> {
        match tokio::time::timeout(self.call_timeout, fut).await {
            Err(_) => Err(ControllerError::Unavailable {
                socket: self.socket.clone(),
                detail: format!("{call}: no answer within {:?}", self.call_timeout),
            }),
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => match s.code() {
                // Produced by the client itself (timeouts, broken connection);
                // the controller never answers these on purpose.
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                    Err(ControllerError::Unavailable {
                        socket: self.socket.clone(),
                        detail: format!("{call}: {}", s.message()),
                    })
                }
                tonic::Code::Unavailable if std::error::Error::source(&s).is_some() => {
                    Err(ControllerError::Unavailable {
                        socket: self.socket.clone(),
                        detail: format!("{call}: {}", chain(&s)),
                    })
                }
                code => Err(ControllerError::Refused {
                    call,
                    code,
                    message: s.message().to_owned(),
                }),
            },
        }
    }

    /// The endpoint whose network namespace `pid` is in; `Ok(None)` when p4lb
    /// manages no endpoint there.
    pub async fn endpoint_of_pid(&self, pid: u32) -> Result<Option<Endpoint>, ControllerError> {
        let mut c = self.client.clone();
        let req = GetEndpointRequest {
            identity: Some(Identity {
                pid,
                netns_path: String::new(),
            }),
            ..Default::default()
        };
        match self.call("GetEndpoint", c.get_endpoint(req)).await {
            Ok(e) => Ok(Some(e)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn migration_event(
        &self,
        req: MigrationEventRequest,
    ) -> Result<Migration, ControllerError> {
        let mut c = self.client.clone();
        self.call("MigrationEvent", c.migration_event(req)).await
    }

    pub async fn update_metadata(
        &self,
        req: UpdateEndpointMetadataRequest,
    ) -> Result<Endpoint, ControllerError> {
        let mut c = self.client.clone();
        self.call("UpdateEndpointMetadata", c.update_endpoint_metadata(req))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn missing_socket_is_unavailable_quickly() {
        let d = tempfile::tempdir().unwrap();
        let t0 = std::time::Instant::now();
        let r = Controller::connect(
            &d.path().join("none.sock"),
            Duration::from_millis(500),
            Duration::from_millis(500),
        )
        .await;
        assert!(matches!(r, Err(ControllerError::Unavailable { .. })));
        assert!(t0.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn silent_socket_times_out() {
        // A listener that accepts but never speaks HTTP/2: connect or the call
        // must give up within the configured bounds.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("silent.sock");
        let l = tokio::net::UnixListener::bind(&p).unwrap();
        let _keep = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        let t0 = std::time::Instant::now();
        let r = async {
            let c = Controller::connect(&p, Duration::from_millis(300), Duration::from_millis(300))
                .await?;
            c.endpoint_of_pid(1).await
        }
        .await;
        assert!(
            matches!(r, Err(ControllerError::Unavailable { .. })),
            "{r:?}"
        );
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    }
}
