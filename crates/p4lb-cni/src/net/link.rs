//! Links over rtnetlink: the veth pair and lookups.

use std::os::fd::{AsFd, AsRawFd};

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage,
};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec};

use super::netns::NetNs;
use crate::cni::error::{netlink, CniError, Code};

/// The errno inside a netlink error, if it is one.
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// A netlink connection bound to one network namespace.
pub struct Netlink {
    pub handle: Handle,
}

/// What we need to know about a link.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub alias: Option<String>,
    pub mtu: Option<u32>,
    pub up: bool,
    pub kind: Option<String>,
}

impl Link {
    fn from_message(m: &LinkMessage) -> Self {
        let mut l = Link {
            index: m.header.index,
            up: m.header.flags.contains(LinkFlags::Up),
            ..Default::default()
        };
        for attr in &m.attributes {
            match attr {
                LinkAttribute::IfName(n) => l.name = n.clone(),
                LinkAttribute::Address(a) if a.len() == 6 => {
                    let mut mac = [0u8; 6];
                    mac.copy_from_slice(a);
                    l.mac = Some(mac);
                }
                LinkAttribute::IfAlias(a) => l.alias = Some(a.clone()),
                LinkAttribute::Mtu(v) => l.mtu = Some(*v),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let NlLinkInfo::Kind(k) = i {
                            l.kind = Some(k.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        l
    }
}

/// Formats a MAC as `02:00:00:00:00:01`.
pub fn mac_to_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `02:00:00:00:00:01` (also with '-').
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = text.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (dst, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return None;
        }
        *dst = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac)
}

impl Netlink {
    /// A connection in the calling thread's current namespace.
    pub fn current() -> Result<Self, CniError> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| netlink("netlink socket", e))?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// A connection inside `ns`.
    pub fn in_ns(ns: &NetNs) -> Result<Self, CniError> {
        let (conn, handle) = ns.netlink()?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// The link called `name`, if any.
    pub async fn link(&self, name: &str) -> Result<Option<Link>, CniError> {
        let mut s = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match s.try_next().await {
            Ok(Some(m)) => Ok(Some(Link::from_message(&m))),
            Ok(None) => Ok(None),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(netlink(format!("looking up link {name}"), e)),
        }
    }

    /// Every link of the namespace.
    pub async fn links(&self) -> Result<Vec<Link>, CniError> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| netlink("listing links", e))?;
        Ok(msgs.iter().map(Link::from_message).collect())
    }

    /// Creates a veth pair: `host` here (with `alias`), `peer` directly inside
    /// `peer_ns` under its final name, so it never appears in this namespace.
    pub async fn create_veth(
        &self,
        host: &str,
        alias: &str,
        peer: &str,
        peer_ns: &NetNs,
        mtu: Option<u32>,
        peer_mac: Option<[u8; 6]>,
    ) -> Result<(), CniError> {
        let mut peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.to_string())
            .setns_by_fd(peer_ns.as_fd().as_raw_fd());
        if let Some(m) = mtu {
            peer_msg = peer_msg.mtu(m);
        }
        if let Some(mac) = peer_mac {
            peer_msg = peer_msg.address(mac.to_vec());
        }
        let mut msg = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth)
            .name(host.to_string())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg.build())));
        if let Some(m) = mtu {
            msg = msg.mtu(m);
        }
        self.handle
            .link()
            .add(msg.build())
            .execute()
            .await
            .map_err(|e| {
                if errno(&e) == Some(libc::EEXIST) {
                    CniError::new(Code::InterfaceExists, "interface already exists")
                        .details(format!("creating veth {host} <-> {peer}: {e}"))
                } else {
                    netlink(format!("creating veth {host} <-> {peer}"), e)
                }
            })?;
        // The kernel applies IFLA_IFALIAS only when changing a link, not when creating
        // one: set it now. On failure the caller's rollback removes the pair.
        let link = self.link(host).await?.ok_or_else(|| {
            CniError::new(Code::Netlink, "veth vanished after creation").details(host.to_string())
        })?;
        if let Err(e) = self
            .handle
            .link()
            .set(
                LinkUnspec::new_with_index(link.index)
                    .alias(alias.to_string())
                    .build(),
            )
            .execute()
            .await
        {
            let _ = self.handle.link().del(link.index).execute().await;
            return Err(netlink(format!("setting alias on {host}"), e));
        }
        Ok(())
    }

    /// Deletes the link called `name`; `Ok(false)` when there was none.
    pub async fn delete(&self, name: &str) -> Result<bool, CniError> {
        let Some(link) = self.link(name).await? else {
            return Ok(false);
        };
        match self.handle.link().del(link.index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(netlink(format!("deleting link {name}"), e)),
        }
    }

    pub async fn set_up(&self, index: u32) -> Result<(), CniError> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| netlink(format!("setting link {index} up"), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        let m = parse_mac("02:AB:00:00:00:01").unwrap();
        assert_eq!(mac_to_string(&m), "02:ab:00:00:00:01");
        assert!(parse_mac("02:ab:00:00:00").is_none());
        assert!(parse_mac("02:ab:00:00:00:zz").is_none());
        assert!(parse_mac("2:ab:00:00:00:01").is_none());
    }
}
