//! How the controller reaches a switch's gRPC services: [`SwitchChannel`], either a
//! connection (tonic's `Channel`: Unix socket, TCP, mutual TLS) or, for the embedded
//! software switch, the switch's own services called in this process
//! (`p4lb_switch::SwitchHandle::in_process`).
//!
//! Both carry the same P4Runtime and SwitchPorts messages through the same client code
//! ([`super::session`]); the in-process one skips the socket, HTTP/2 and the tasks that
//! carry a call over them, so a table write of the embedded switch costs its encoding and
//! the switch's work, not a round trip between tasks. A migration's LOCK and UNLOCK wait
//! for that write (docs/migration.md, section 6).

use std::convert::Infallible;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http;
use tonic::transport::Channel;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

type Req = http::Request<Body>;
type Resp = http::Response<Body>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A transport for p4lb's gRPC clients of a switch (cheap to clone).
#[derive(Clone)]
pub struct SwitchChannel {
    inner: BoxCloneSyncService<Req, Resp, BoxError>,
    in_process: bool,
}

impl SwitchChannel {
    /// Calls `services` (a switch's gRPC services in this process) directly.
    pub fn in_process<S>(services: S) -> Self
    where
        S: Service<Req, Response = Resp, Error = Infallible> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        SwitchChannel {
            inner: BoxCloneSyncService::new(services.map_err(|e: Infallible| match e {})),
            in_process: true,
        }
    }

    /// True when the services are called in this process, not over a connection.
    pub fn is_in_process(&self) -> bool {
        self.in_process
    }
}

impl From<Channel> for SwitchChannel {
    fn from(channel: Channel) -> Self {
        SwitchChannel {
            inner: BoxCloneSyncService::new(channel.map_err(BoxError::from)),
            in_process: false,
        }
    }
}

impl std::fmt::Debug for SwitchChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.in_process {
            "SwitchChannel(in process)"
        } else {
            "SwitchChannel(connection)"
        })
    }
}

impl Service<Req> for SwitchChannel {
    type Response = Resp;
    type Error = BoxError;
    type Future = <BoxCloneSyncService<Req, Resp, BoxError> as Service<Req>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.inner.call(req)
    }
}
