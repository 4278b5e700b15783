//! Addresses, routes and neighbours of the container interface.

use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::RouteMessageBuilder;

use super::link::{errno, Netlink};
use crate::cni::error::{netlink, CniError};
use crate::cni::result::{IpNet, Route};

/// An address as seen on a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkAddr {
    pub net: IpNet,
}

/// A route as seen in the main table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenRoute {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

impl Netlink {
    /// Adds `net` to link `index`. `noprefixroute` keeps the kernel from adding the
    /// subnet route (used for a restored container's old /32).
    pub async fn add_address(
        &self,
        index: u32,
        net: IpNet,
        noprefixroute: bool,
    ) -> Result<(), CniError> {
        let mut req = self.handle.address().add(index, net.addr, net.prefix);
        if noprefixroute {
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Noprefixroute));
        }
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(netlink(format!("adding address {net}"), e)),
        }
    }

    /// Removes `addr` from link `index`; Ok(false) when it is not there.
    pub async fn remove_address(&self, index: u32, addr: IpAddr) -> Result<bool, CniError> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| netlink("listing addresses", e))?;
        let found = msgs.into_iter().find(|m| {
            m.attributes
                .iter()
                .any(|a| matches!(a, AddressAttribute::Local(ip) | AddressAttribute::Address(ip) if *ip == addr))
        });
        let Some(m) = found else { return Ok(false) };
        match self.handle.address().del(m).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(libc::EADDRNOTAVAIL) => Ok(false),
            Err(e) => Err(netlink(format!("removing address {addr}"), e)),
        }
    }

    /// Addresses on link `index`.
    pub async fn addresses(&self, index: u32) -> Result<Vec<LinkAddr>, CniError> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| netlink("listing addresses", e))?;
        let mut out = Vec::new();
        for m in msgs {
            let prefix = m.header.prefix_len;
            let addr = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let addr = addr.or_else(|| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            });
            if let Some(addr) = addr {
                if let Ok(net) = IpNet::new(addr, prefix) {
                    out.push(LinkAddr { net });
                }
            }
        }
        Ok(out)
    }

    /// Adds a route out of link `index`; a route without a gateway is on-link.
    pub async fn add_route(&self, index: u32, route: &Route) -> Result<(), CniError> {
        let dst = route.dst.network();
        let mut b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dst.addr, dst.prefix)
            .map_err(|e| netlink(format!("route to {dst}"), e))?
            .output_interface(index);
        if let Some(gw) = route.gw {
            b = b
                .gateway(gw)
                .map_err(|e| netlink(format!("route to {dst} via {gw}"), e))?;
        }
        if let Some(p) = route.priority {
            b = b.priority(p);
        }
        if let Some(t) = route.table {
            b = b.table_id(t);
        }
        let mut msg = b.build();
        if let Some(mtu) = route.mtu {
            msg.attributes.push(RouteAttribute::Metrics(vec![
                rtnetlink::packet_route::route::RouteMetric::Mtu(mtu),
            ]));
        }
        match self.handle.route().add(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(netlink(format!("adding route to {dst}"), e)),
        }
    }

    /// IPv4 and IPv6 routes of the main table.
    pub async fn routes(&self) -> Result<Vec<SeenRoute>, CniError> {
        let mut out = Vec::new();
        for v6 in [false, true] {
            let req: RouteMessage = if v6 {
                RouteMessageBuilder::<std::net::Ipv6Addr>::new().build()
            } else {
                RouteMessageBuilder::<std::net::Ipv4Addr>::new().build()
            };
            let msgs: Vec<RouteMessage> = self
                .handle
                .route()
                .get(req)
                .execute()
                .try_collect()
                .await
                .map_err(|e| netlink("listing routes", e))?;
            for m in msgs {
                let table = m
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        RouteAttribute::Table(t) => Some(*t),
                        _ => None,
                    })
                    .unwrap_or(m.header.table as u32);
                if table != 254 {
                    continue;
                }
                let mut dst = None;
                let mut gw = None;
                for a in &m.attributes {
                    match a {
                        RouteAttribute::Destination(d) => dst = route_addr(d),
                        RouteAttribute::Gateway(g) => gw = route_addr(g),
                        _ => {}
                    }
                }
                let dst = dst.unwrap_or(if v6 {
                    IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
                } else {
                    IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
                });
                if let Ok(dst) = IpNet::new(dst, m.header.destination_prefix_length) {
                    out.push(SeenRoute { dst, gw });
                }
            }
        }
        Ok(out)
    }

    /// A permanent neighbour entry (the gateway's MAC) on link `index`.
    pub async fn add_permanent_neighbour(
        &self,
        index: u32,
        ip: IpAddr,
        mac: [u8; 6],
    ) -> Result<(), CniError> {
        self.handle
            .neighbours()
            .add(index, ip)
            .link_layer_address(&mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(|e| netlink(format!("neighbour {ip}"), e))
    }

    /// The neighbour entry for `ip` on link `index`: its MAC and whether it is permanent.
    pub async fn neighbour(
        &self,
        index: u32,
        ip: IpAddr,
    ) -> Result<Option<(Vec<u8>, bool)>, CniError> {
        let msgs: Vec<_> = self
            .handle
            .neighbours()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| netlink("listing neighbours", e))?;
        for m in msgs {
            if m.header.ifindex != index {
                continue;
            }
            let mut dst = None;
            let mut lla = None;
            for a in &m.attributes {
                match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                        dst = Some(IpAddr::V4(*v4))
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                        dst = Some(IpAddr::V6(*v6))
                    }
                    NeighbourAttribute::LinkLayerAddress(l) => lla = Some(l.clone()),
                    _ => {}
                }
            }
            if dst == Some(ip) {
                return Ok(Some((
                    lla.unwrap_or_default(),
                    m.header.state == NeighbourState::Permanent,
                )));
            }
        }
        Ok(None)
    }
}
