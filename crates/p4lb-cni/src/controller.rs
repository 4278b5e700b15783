//! The controller client: gRPC over the controller's Unix socket, every call bounded by
//! `controllerTimeoutMs`, gRPC status mapped to CNI error codes.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use p4lb_proto::api::controller_client::ControllerClient;
use p4lb_proto::api::{
    Attachment, DeregisterEndpointRequest, Endpoint, GarbageCollectRequest, GetEndpointRequest,
    ListEndpointsRequest, RegisterEndpointRequest, StatusRequest, StatusResponse,
};
use tonic::transport::{Channel, Endpoint as TonicEndpoint, Uri};
use tonic::Code as GrpcCode;

use crate::cni::error::{CniError, Code};

pub struct Controller {
    client: ControllerClient<Channel>,
    timeout: Duration,
    socket: PathBuf,
}

/// Maps a refused or failed call. Transient conditions become 11 (try again later),
/// refusals 102.
pub fn map_status(what: &str, socket: &Path, s: &tonic::Status) -> CniError {
    let transient = matches!(
        s.code(),
        GrpcCode::Unavailable
            | GrpcCode::DeadlineExceeded
            | GrpcCode::ResourceExhausted
            | GrpcCode::Aborted
            | GrpcCode::Cancelled
    );
    let code = if transient {
        Code::TryAgainLater
    } else {
        Code::ControllerRejected
    };
    CniError::new(code, format!("controller {what} failed")).details(format!(
        "{} ({:?}): {}",
        socket.display(),
        s.code(),
        s.message()
    ))
}

impl Controller {
    /// Connects to the socket; an absent or dead controller is error 11.
    pub async fn connect(socket: &Path, timeout: Duration) -> Result<Self, CniError> {
        let path = socket.to_path_buf();
        let connector = tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        });
        // The authority is not used for a Unix socket; it only has to be a valid URI.
        let endpoint = TonicEndpoint::from_static("http://p4lb-controller")
            .connect_timeout(timeout)
            .timeout(timeout);
        let unavailable = |detail: String| {
            CniError::new(Code::TryAgainLater, "p4lb controller unavailable")
                .details(format!("{}: {detail}", socket.display()))
        };
        let channel = tokio::time::timeout(timeout, endpoint.connect_with_connector(connector))
            .await
            .map_err(|_| unavailable(format!("no answer within {timeout:?}")))?
            .map_err(|e| {
                let mut msg = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    let text = s.to_string();
                    if !msg.contains(&text) {
                        msg = format!("{msg}: {text}");
                    }
                    src = s.source();
                }
                unavailable(msg)
            })?;
        Ok(Controller {
            client: ControllerClient::new(channel),
            timeout,
            socket: socket.to_path_buf(),
        })
    }

    async fn call<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, tonic::Status> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                "{what}: no answer within {:?}",
                self.timeout
            ))),
        }
    }

    pub async fn register(&mut self, req: RegisterEndpointRequest) -> Result<Endpoint, CniError> {
        let mut c = self.client.clone();
        self.call("RegisterEndpoint", c.register_endpoint(req))
            .await
            .map_err(|s| map_status("RegisterEndpoint", &self.socket, &s))
    }

    /// Removes the endpoint; `Ok(false)` when the controller did not know it.
    pub async fn deregister(&mut self, container_id: &str, ifname: &str) -> Result<bool, CniError> {
        let mut c = self.client.clone();
        let req = DeregisterEndpointRequest {
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
        };
        match self
            .call("DeregisterEndpoint", c.deregister_endpoint(req))
            .await
        {
            Ok(r) => Ok(r.existed),
            Err(s) if s.code() == GrpcCode::NotFound => Ok(false),
            Err(s) => Err(map_status("DeregisterEndpoint", &self.socket, &s)),
        }
    }

    pub async fn get(&mut self, key: &str) -> Result<Option<Endpoint>, CniError> {
        let mut c = self.client.clone();
        let req = GetEndpointRequest {
            key: key.to_string(),
            ..Default::default()
        };
        match self.call("GetEndpoint", c.get_endpoint(req)).await {
            Ok(e) => Ok(Some(e)),
            Err(s) if s.code() == GrpcCode::NotFound => Ok(None),
            Err(s) => Err(map_status("GetEndpoint", &self.socket, &s)),
        }
    }

    pub async fn list(&mut self) -> Result<Vec<Endpoint>, CniError> {
        let mut c = self.client.clone();
        self.call("ListEndpoints", c.list_endpoints(ListEndpointsRequest {}))
            .await
            .map(|r| r.endpoints)
            .map_err(|s| map_status("ListEndpoints", &self.socket, &s))
    }

    pub async fn garbage_collect(
        &mut self,
        network: &str,
        valid: Vec<Attachment>,
    ) -> Result<Vec<String>, CniError> {
        let mut c = self.client.clone();
        let req = GarbageCollectRequest {
            network: network.to_string(),
            valid_attachments: valid,
        };
        self.call("GarbageCollect", c.garbage_collect(req))
            .await
            .map(|r| r.removed_keys)
            .map_err(|s| map_status("GarbageCollect", &self.socket, &s))
    }

    pub async fn status(&mut self) -> Result<StatusResponse, CniError> {
        let mut c = self.client.clone();
        self.call("Status", c.status(StatusRequest {}))
            .await
            .map_err(|s| map_status("Status", &self.socket, &s))
    }
}

/// The controller's key of an attachment.
pub fn endpoint_key(container_id: &str, ifname: &str) -> String {
    format!("{container_id}/{ifname}")
}
