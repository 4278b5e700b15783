//! The controller as the plugin sees it: [`p4lb_api::Client`] with one timeout
//! (`controllerTimeoutMs`) for connecting and for each call, and every failure as a
//! CNI error: an unreachable controller or a transient refusal is 11 (try again
//! later), any other refusal 102.

use std::path::Path;
use std::time::Duration;

use p4lb_api::api::{Attachment, Endpoint, Migration, RegisterEndpointRequest, StatusResponse};
use p4lb_api::{ApiError, Client};
use tonic::Code as GrpcCode;

use crate::cni::error::{CniError, Code};

pub use p4lb_api::endpoint_key;

/// The CNI error of a failed call `what` to the controller at `socket`.
pub fn map_error(what: &str, socket: &Path, e: &ApiError) -> CniError {
    match e {
        ApiError::Unavailable { detail, .. } => {
            CniError::new(Code::TryAgainLater, format!("controller {what} failed"))
                .details(format!("{}: {detail}", socket.display()))
        }
        ApiError::Refused { code, message, .. } => {
            let transient = matches!(
                code,
                GrpcCode::Unavailable
                    | GrpcCode::DeadlineExceeded
                    | GrpcCode::ResourceExhausted
                    | GrpcCode::Aborted
                    | GrpcCode::Cancelled
            );
            let cni = if transient {
                Code::TryAgainLater
            } else {
                Code::ControllerRejected
            };
            CniError::new(cni, format!("controller {what} failed"))
                .details(format!("{} ({code:?}): {message}", socket.display()))
        }
    }
}

pub struct Controller {
    client: Client,
}

impl Controller {
    /// Connects to the socket; an absent or dead controller is error 11.
    pub async fn connect(socket: &Path, timeout: Duration) -> Result<Self, CniError> {
        match Client::connect(socket, timeout, timeout).await {
            Ok(client) => Ok(Self { client }),
            Err(ApiError::Unavailable { socket, detail }) => Err(CniError::new(
                Code::TryAgainLater,
                "p4lb controller unavailable",
            )
            .details(format!("{}: {detail}", socket.display()))),
            Err(e) => Err(map_error("connect", socket, &e)),
        }
    }

    pub async fn register(&mut self, req: RegisterEndpointRequest) -> Result<Endpoint, CniError> {
        self.client
            .register_endpoint(req)
            .await
            .map_err(|e| map_error("RegisterEndpoint", self.client.socket(), &e))
    }

    /// Removes the endpoint; `Ok(false)` when the controller did not know it.
    pub async fn deregister(&mut self, container_id: &str, ifname: &str) -> Result<bool, CniError> {
        self.client
            .deregister_endpoint(container_id, ifname)
            .await
            .map_err(|e| map_error("DeregisterEndpoint", self.client.socket(), &e))
    }

    pub async fn get(&mut self, key: &str) -> Result<Option<Endpoint>, CniError> {
        self.client
            .get_endpoint(key)
            .await
            .map_err(|e| map_error("GetEndpoint", self.client.socket(), &e))
    }

    pub async fn list(&mut self) -> Result<Vec<Endpoint>, CniError> {
        self.client
            .list_endpoints()
            .await
            .map_err(|e| map_error("ListEndpoints", self.client.socket(), &e))
    }

    pub async fn migrations(&mut self) -> Result<Vec<Migration>, CniError> {
        self.client
            .list_migrations()
            .await
            .map_err(|e| map_error("ListMigrations", self.client.socket(), &e))
    }

    pub async fn garbage_collect(
        &mut self,
        network: &str,
        valid: Vec<Attachment>,
    ) -> Result<Vec<String>, CniError> {
        self.client
            .garbage_collect(network, valid)
            .await
            .map_err(|e| map_error("GarbageCollect", self.client.socket(), &e))
    }

    pub async fn status(&mut self) -> Result<StatusResponse, CniError> {
        self.client
            .status()
            .await
            .map_err(|e| map_error("Status", self.client.socket(), &e))
    }
}
