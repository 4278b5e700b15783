//! BMv2's Thrift runtime API, the calls p4lb needs: the three port-management calls
//! of the `standard` service (bm_dev_mgr_add_port, bm_dev_mgr_remove_port,
//! bm_dev_mgr_show_ports) and `set_all_egress_queue_depths` of the `simple_switch`
//! service, spoken with TBinaryProtocol (strict), buffered transport and multiplexed
//! service names.
//!
//! A small hand encoder instead of the `thrift` crate: four calls with a handful of
//! field types do not justify a code generator and a blocking client library, and
//! an encoder this size can be checked byte for byte against the protocol.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const VERSION_1: u32 = 0x8001_0000;
const CALL: u8 = 1;
const REPLY: u8 = 2;
const EXCEPTION: u8 = 3;

const T_STOP: u8 = 0;
const T_BOOL: u8 = 2;
const T_I32: u8 = 8;
const T_STRING: u8 = 11;
const T_STRUCT: u8 = 12;
const T_MAP: u8 = 13;
const T_LIST: u8 = 15;

/// The multiplexed service name of BMv2's standard runtime API.
pub const SERVICE: &str = "standard";
/// The multiplexed service name of simple_switch's own runtime API.
pub const SIMPLE_SWITCH_SERVICE: &str = "simple_switch";

#[derive(Debug, thiserror::Error)]
pub enum ThriftError {
    #[error("thrift {addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("thrift {0}: timed out")]
    Timeout(String),
    #[error("thrift reply truncated")]
    Truncated,
    #[error("thrift reply malformed: {0}")]
    Malformed(String),
    #[error("thrift application exception: {0}")]
    Application(String),
    #[error("BMv2 refused {call}: InvalidDevMgrOperation code {code}")]
    DevMgr { call: String, code: i32 },
}

/// A port as BMv2 reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    pub port: i32,
    pub iface: String,
    pub is_up: bool,
}

fn put_i32(b: &mut Vec<u8>, v: i32) {
    b.extend_from_slice(&v.to_be_bytes());
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    put_i32(b, s.len() as i32);
    b.extend_from_slice(s.as_bytes());
}

fn field(b: &mut Vec<u8>, ty: u8, id: i16) {
    b.push(ty);
    b.extend_from_slice(&id.to_be_bytes());
}

fn message(name: &str, seq: i32, args: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    message_to(SERVICE, name, seq, args)
}

fn message_to(service: &str, name: &str, seq: i32, args: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut b = Vec::new();
    put_i32(&mut b, (VERSION_1 | u32::from(CALL)) as i32);
    put_str(&mut b, &format!("{service}:{name}"));
    put_i32(&mut b, seq);
    args(&mut b);
    b.push(T_STOP);
    b
}

/// Encodes a bm_dev_mgr_add_port call.
pub fn encode_add_port(seq: i32, iface: &str, port: i32, pcap: &str) -> Vec<u8> {
    message("bm_dev_mgr_add_port", seq, |b| {
        field(b, T_STRING, 1);
        put_str(b, iface);
        field(b, T_I32, 2);
        put_i32(b, port);
        field(b, T_STRING, 3);
        put_str(b, pcap);
    })
}

/// Encodes a bm_dev_mgr_remove_port call.
pub fn encode_remove_port(seq: i32, port: i32) -> Vec<u8> {
    message("bm_dev_mgr_remove_port", seq, |b| {
        field(b, T_I32, 1);
        put_i32(b, port);
    })
}

/// Encodes a bm_dev_mgr_show_ports call.
pub fn encode_show_ports(seq: i32) -> Vec<u8> {
    message("bm_dev_mgr_show_ports", seq, |_| {})
}

/// Encodes a simple_switch `set_all_egress_queue_depths(depth_pkts)` call.
pub fn encode_set_all_egress_queue_depths(seq: i32, depth_pkts: i32) -> Vec<u8> {
    message_to(
        SIMPLE_SWITCH_SERVICE,
        "set_all_egress_queue_depths",
        seq,
        |b| {
            field(b, T_I32, 1);
            put_i32(b, depth_pkts);
        },
    )
}

/// A cursor over bytes received so far; `Truncated` means "read more".
pub struct Buf<'a>(pub &'a [u8]);

impl Buf<'_> {
    fn take(&mut self, n: usize) -> Result<Vec<u8>, ThriftError> {
        if self.0.len() < n {
            return Err(ThriftError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a.to_vec())
    }
}

fn i32_of(s: &mut Buf) -> Result<i32, ThriftError> {
    let b = s.take(4)?;
    Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn string_of(s: &mut Buf) -> Result<String, ThriftError> {
    let n = i32_of(s)?;
    if !(0..=1 << 20).contains(&n) {
        return Err(ThriftError::Malformed(format!("string length {n}")));
    }
    let b = s.take(n as usize)?;
    String::from_utf8(b).map_err(|_| ThriftError::Malformed(String::from("non-UTF-8 string")))
}

/// Skips a value of type `ty`.
fn skip(s: &mut Buf, ty: u8) -> Result<(), ThriftError> {
    match ty {
        T_BOOL | 3 => {
            s.take(1)?;
        }
        6 => {
            s.take(2)?;
        }
        T_I32 => {
            s.take(4)?;
        }
        4 | 10 => {
            s.take(8)?;
        }
        T_STRING => {
            string_of(s)?;
        }
        T_STRUCT => loop {
            let t = s.take(1)?[0];
            if t == T_STOP {
                break;
            }
            s.take(2)?;
            skip(s, t)?;
        },
        T_MAP => {
            let kv = s.take(2)?;
            let n = i32_of(s)?;
            for _ in 0..n.max(0) {
                skip(s, kv[0])?;
                skip(s, kv[1])?;
            }
        }
        T_LIST | 14 => {
            let et = s.take(1)?[0];
            let n = i32_of(s)?;
            for _ in 0..n.max(0) {
                skip(s, et)?;
            }
        }
        other => return Err(ThriftError::Malformed(format!("unknown type {other}"))),
    }
    Ok(())
}

/// Decoded reply: the result struct's field 0 for show_ports, nothing for void
/// calls; exceptions become errors.
pub fn decode_reply(s: &mut Buf, call: &str) -> Result<Vec<PortInfo>, ThriftError> {
    let v = i32_of(s)? as u32;
    if v & 0xffff_0000 != VERSION_1 {
        return Err(ThriftError::Malformed(format!("bad version word {v:#x}")));
    }
    let mtype = (v & 0xff) as u8;
    let _name = string_of(s)?;
    let _seq = i32_of(s)?;
    if mtype == EXCEPTION {
        // TApplicationException { 1: string message, 2: i32 type }
        let mut msg = String::new();
        loop {
            let t = s.take(1)?[0];
            if t == T_STOP {
                break;
            }
            let id = s.take(2)?;
            if t == T_STRING && id == [0, 1] {
                msg = string_of(s)?;
            } else {
                skip(s, t)?;
            }
        }
        return Err(ThriftError::Application(msg));
    }
    if mtype != REPLY {
        return Err(ThriftError::Malformed(format!("message type {mtype}")));
    }
    let mut ports = Vec::new();
    let mut failure = None;
    loop {
        let t = s.take(1)?[0];
        if t == T_STOP {
            break;
        }
        let idb = s.take(2)?;
        let id = i16::from_be_bytes([idb[0], idb[1]]);
        match (id, t) {
            (0, T_LIST) => {
                let et = s.take(1)?[0];
                let n = i32_of(s)?;
                for _ in 0..n.max(0) {
                    if et != T_STRUCT {
                        skip(s, et)?;
                        continue;
                    }
                    let mut p = PortInfo {
                        port: 0,
                        iface: String::new(),
                        is_up: false,
                    };
                    loop {
                        let ft = s.take(1)?[0];
                        if ft == T_STOP {
                            break;
                        }
                        let fb = s.take(2)?;
                        match (i16::from_be_bytes([fb[0], fb[1]]), ft) {
                            (1, T_I32) => p.port = i32_of(s)?,
                            (2, T_STRING) => p.iface = string_of(s)?,
                            (3, T_BOOL) => p.is_up = s.take(1)?[0] != 0,
                            _ => skip(s, ft)?,
                        }
                    }
                    ports.push(p);
                }
            }
            (1, T_STRUCT) => {
                // InvalidDevMgrOperation { 1: DevMgrErrorCode code }
                let mut code = 0;
                loop {
                    let ft = s.take(1)?[0];
                    if ft == T_STOP {
                        break;
                    }
                    let fb = s.take(2)?;
                    if ft == T_I32 && fb == [0, 1] {
                        code = i32_of(s)?;
                    } else {
                        skip(s, ft)?;
                    }
                }
                failure = Some(code);
            }
            _ => skip(s, t)?,
        }
    }
    if let Some(code) = failure {
        return Err(ThriftError::DevMgr {
            call: call.to_string(),
            code,
        });
    }
    Ok(ports)
}

/// A client of BMv2's Thrift runtime port calls (one connection per call).
#[derive(Debug, Clone)]
pub struct Bmv2Thrift {
    pub addr: String,
    pub timeout: Duration,
}

impl Bmv2Thrift {
    async fn call(&self, name: &str, msg: Vec<u8>) -> Result<Vec<PortInfo>, ThriftError> {
        let addr = self.addr.clone();
        let io = |source| ThriftError::Io {
            addr: addr.clone(),
            source,
        };
        let fut = async {
            let mut s = TcpStream::connect(&self.addr).await.map_err(io)?;
            s.set_nodelay(true).map_err(io)?;
            s.write_all(&msg).await.map_err(io)?;
            s.flush().await.map_err(io)?;
            let mut got = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = s.read(&mut chunk).await.map_err(io)?;
                if n == 0 {
                    return Err(ThriftError::Malformed(String::from(
                        "connection closed before a complete reply",
                    )));
                }
                got.extend_from_slice(&chunk[..n]);
                match decode_reply(&mut Buf(&got), name) {
                    Err(ThriftError::Truncated) => continue,
                    other => return other,
                }
            }
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| ThriftError::Timeout(self.addr.clone()))?
    }

    pub async fn add_port(&self, iface: &str, port: u32) -> Result<(), ThriftError> {
        self.call(
            "bm_dev_mgr_add_port",
            encode_add_port(1, iface, port as i32, ""),
        )
        .await
        .map(|_| ())
    }

    pub async fn remove_port(&self, port: u32) -> Result<(), ThriftError> {
        self.call("bm_dev_mgr_remove_port", encode_remove_port(1, port as i32))
            .await
            .map(|_| ())
    }

    /// Sets the depth (in packets) of every egress queue, present and future.
    pub async fn set_all_egress_queue_depths(&self, depth_pkts: u32) -> Result<(), ThriftError> {
        let depth = i32::try_from(depth_pkts).unwrap_or(i32::MAX);
        self.call(
            "set_all_egress_queue_depths",
            encode_set_all_egress_queue_depths(1, depth),
        )
        .await
        .map(|_| ())
    }

    pub async fn show_ports(&self) -> Result<Vec<PortInfo>, ThriftError> {
        self.call("bm_dev_mgr_show_ports", encode_show_ports(1))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::net::TcpListener;

    /// Bytes of `bm_dev_mgr_add_port("veth1", 3, "")`, seq 1, written out from the
    /// TBinaryProtocol specification.
    const ADD_PORT_VETH1_3: &[u8] = &[
        0x80, 0x01, 0x00, 0x01, // strict version 1, CALL
        0x00, 0x00, 0x00, 0x1c, // name length 28
        b's', b't', b'a', b'n', b'd', b'a', b'r', b'd', b':', // "standard:"
        b'b', b'm', b'_', b'd', b'e', b'v', b'_', b'm', b'g', b'r', b'_', b'a', b'd', b'd', b'_',
        b'p', b'o', b'r', b't', // "bm_dev_mgr_add_port"
        0x00, 0x00, 0x00, 0x01, // seqid 1
        0x0b, 0x00, 0x01, 0x00, 0x00, 0x00, 0x05, b'v', b'e', b't', b'h', b'1', // 1: string
        0x08, 0x00, 0x02, 0x00, 0x00, 0x00, 0x03, // 2: i32 3
        0x0b, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, // 3: string ""
        0x00, // stop
    ];

    #[test]
    fn add_port_bytes_match_the_protocol() {
        assert_eq!(encode_add_port(1, "veth1", 3, ""), ADD_PORT_VETH1_3);
    }

    #[test]
    fn queue_depth_bytes_match_the_protocol() {
        let mut want = vec![0x80, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 41];
        want.extend_from_slice(b"simple_switch:set_all_egress_queue_depths");
        want.extend_from_slice(&[0, 0, 0, 1]); // seqid
        want.extend_from_slice(&[0x08, 0x00, 0x01, 0x00, 0x00, 0x04, 0x00]); // 1: i32 1024
        want.push(0x00); // stop
        assert_eq!(encode_set_all_egress_queue_depths(1, 1024), want);
    }

    #[test]
    fn remove_and_show_bytes() {
        let r = encode_remove_port(7, 4);
        assert_eq!(&r[..4], &[0x80, 1, 0, 1]);
        assert_eq!(&r[r.len() - 12..], &[0, 0, 0, 7, 0x08, 0, 1, 0, 0, 0, 4, 0]);
        let s = encode_show_ports(2);
        assert_eq!(&s[s.len() - 5..], &[0, 0, 0, 2, 0]);
    }

    fn reply_header(name: &str, mtype: u8) -> Vec<u8> {
        let mut b = Vec::new();
        put_i32(&mut b, (VERSION_1 | u32::from(mtype)) as i32);
        put_str(&mut b, name);
        put_i32(&mut b, 1);
        b
    }

    #[test]
    fn decodes_replies_and_exceptions() {
        // void success
        let mut ok = reply_header("bm_dev_mgr_add_port", REPLY);
        ok.push(T_STOP);
        assert!(decode_reply(&mut Buf(&ok), "x").unwrap().is_empty());
        // InvalidDevMgrOperation{code=1}
        let mut ex = reply_header("bm_dev_mgr_add_port", REPLY);
        ex.extend_from_slice(&[T_STRUCT, 0, 1, T_I32, 0, 1, 0, 0, 0, 1, T_STOP, T_STOP]);
        assert!(matches!(
            decode_reply(&mut Buf(&ex), "add"),
            Err(ThriftError::DevMgr { code: 1, .. })
        ));
        // TApplicationException
        let mut ap = reply_header("nope", EXCEPTION);
        ap.extend_from_slice(&[T_STRING, 0, 1]);
        put_str(&mut ap, "Invalid method name");
        ap.extend_from_slice(&[T_I32, 0, 2, 0, 0, 0, 1, T_STOP]);
        match decode_reply(&mut Buf(&ap), "x") {
            Err(ThriftError::Application(m)) => assert_eq!(m, "Invalid method name"),
            other => panic!("{other:?}"),
        }
    }

    /// A fake BMv2 Thrift server: decodes calls as the protocol defines them and
    /// keeps a port table, answering like BMv2 does.
    async fn fake_bmv2() -> (String, Arc<Mutex<Vec<PortInfo>>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let ports = Arc::new(Mutex::new(Vec::<PortInfo>::new()));
        let p2 = ports.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let ports = p2.clone();
                tokio::spawn(async move {
                    use tokio::io::AsyncReadExt;
                    let mut got = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let n = s.read(&mut chunk).await.unwrap();
                    got.extend_from_slice(&chunk[..n]);
                    let mut src = Buf(&got);
                    let v = i32_of(&mut src).unwrap() as u32;
                    assert_eq!(v, VERSION_1 | u32::from(CALL));
                    let name = string_of(&mut src).unwrap();
                    let seq = i32_of(&mut src).unwrap();
                    let (svc, method) = name.split_once(':').unwrap();
                    assert_eq!(svc, "standard");
                    let mut iface = String::new();
                    let mut port = -1;
                    loop {
                        let t = src.take(1).unwrap()[0];
                        if t == T_STOP {
                            break;
                        }
                        let id = src.take(2).unwrap();
                        match (method, id[1], t) {
                            ("bm_dev_mgr_add_port", 1, T_STRING) => {
                                iface = string_of(&mut src).unwrap()
                            }
                            ("bm_dev_mgr_add_port", 2, T_I32)
                            | ("bm_dev_mgr_remove_port", 1, T_I32) => {
                                port = i32_of(&mut src).unwrap()
                            }
                            _ => skip(&mut src, t).unwrap(),
                        }
                    }
                    let mut out = Vec::new();
                    put_i32(&mut out, (VERSION_1 | u32::from(REPLY)) as i32);
                    put_str(&mut out, method);
                    put_i32(&mut out, seq);
                    {
                        let mut table = ports.lock().unwrap();
                        let fail = |out: &mut Vec<u8>| {
                            out.extend_from_slice(&[
                                T_STRUCT, 0, 1, T_I32, 0, 1, 0, 0, 0, 1, T_STOP,
                            ])
                        };
                        match method {
                            "bm_dev_mgr_add_port" => {
                                if table.iter().any(|p| p.port == port) {
                                    fail(&mut out);
                                } else {
                                    table.push(PortInfo {
                                        port,
                                        iface,
                                        is_up: true,
                                    });
                                }
                            }
                            "bm_dev_mgr_remove_port" => {
                                let before = table.len();
                                table.retain(|p| p.port != port);
                                if table.len() == before {
                                    fail(&mut out);
                                }
                            }
                            "bm_dev_mgr_show_ports" => {
                                out.extend_from_slice(&[T_LIST, 0, 0, T_STRUCT]);
                                put_i32(&mut out, table.len() as i32);
                                for p in table.iter() {
                                    out.extend_from_slice(&[T_I32, 0, 1]);
                                    put_i32(&mut out, p.port);
                                    out.extend_from_slice(&[T_STRING, 0, 2]);
                                    put_str(&mut out, &p.iface);
                                    out.extend_from_slice(&[T_BOOL, 0, 3, u8::from(p.is_up)]);
                                    out.extend_from_slice(&[T_MAP, 0, 4, T_STRING, T_STRING]);
                                    put_i32(&mut out, 1);
                                    put_str(&mut out, "k");
                                    put_str(&mut out, "v");
                                    out.push(T_STOP);
                                }
                            }
                            _ => unreachable!(),
                        }
                        out.push(T_STOP);
                    }
                    s.write_all(&out).await.unwrap();
                });
            }
        });
        (addr, ports)
    }

    #[tokio::test]
    async fn client_against_a_faithful_fake() {
        let (addr, ports) = fake_bmv2().await;
        let c = Bmv2Thrift {
            addr,
            timeout: Duration::from_secs(2),
        };
        c.add_port("veth1", 3).await.unwrap();
        c.add_port("veth2", 4).await.unwrap();
        assert!(matches!(
            c.add_port("veth9", 3).await,
            Err(ThriftError::DevMgr { .. })
        ));
        let listed = c.show_ports().await.unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].iface, "veth1");
        assert_eq!(listed[1].port, 4);
        c.remove_port(3).await.unwrap();
        assert!(c.remove_port(3).await.is_err());
        assert_eq!(ports.lock().unwrap().len(), 1);
    }
}
