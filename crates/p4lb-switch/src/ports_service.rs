//! The SwitchPorts gRPC service (p4lb.v1): attach/detach/list ports at run time, the
//! counterpart of BMv2's Thrift `bm_dev_mgr_add_port` / `remove_port` / `show_ports`.

use std::sync::Arc;

use p4lb_proto::api;
use p4lb_proto::api::switch_ports_server::SwitchPorts;
use tonic::{Request, Response, Status};

use crate::ports::{PortError, PortInfo, PortManager};

#[derive(Debug, Clone)]
pub struct SwitchPortsService {
    pub ports: Arc<PortManager>,
}

fn to_api(p: PortInfo) -> api::Port {
    api::Port {
        port: p.port,
        iface: p.iface,
        rx_packets: p.rx_packets,
        tx_packets: p.tx_packets,
        rx_bytes: p.rx_bytes,
        tx_bytes: p.tx_bytes,
        drops: p.drops,
    }
}

fn status(e: PortError) -> Status {
    match e {
        PortError::PortInUse(_) | PortError::IfaceInUse(..) => {
            Status::already_exists(e.to_string())
        }
        PortError::BadPort(_) => Status::invalid_argument(e.to_string()),
        PortError::NoSuchPort(_) => Status::not_found(e.to_string()),
        PortError::Open { ref source, .. } if source.raw_os_error() == Some(libc::ENODEV) => {
            Status::not_found(e.to_string())
        }
        PortError::Open { .. } | PortError::Stopped => Status::internal(e.to_string()),
    }
}

#[tonic::async_trait]
impl SwitchPorts for SwitchPortsService {
    async fn add_port(
        &self,
        request: Request<api::AddPortRequest>,
    ) -> Result<Response<api::Port>, Status> {
        let req = request.into_inner();
        if req.iface.is_empty() {
            return Err(Status::invalid_argument("iface must not be empty"));
        }
        let info = self.ports.add(req.port, &req.iface).map_err(status)?;
        Ok(Response::new(to_api(info)))
    }

    async fn remove_port(
        &self,
        request: Request<api::RemovePortRequest>,
    ) -> Result<Response<api::RemovePortResponse>, Status> {
        self.ports
            .remove(request.into_inner().port)
            .map_err(status)?;
        Ok(Response::new(api::RemovePortResponse {}))
    }

    async fn list_ports(
        &self,
        _request: Request<api::ListPortsRequest>,
    ) -> Result<Response<api::ListPortsResponse>, Status> {
        Ok(Response::new(api::ListPortsResponse {
            ports: self.ports.list().into_iter().map(to_api).collect(),
        }))
    }
}
