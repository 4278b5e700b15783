//! A stand-in for BMv2's Thrift runtime API on a loopback port: it answers
//! `bm_dev_mgr_show_ports` with a fixed port list and accepts add/remove calls
//! (strict TBinaryProtocol, multiplexed name `standard:<method>`, as BMv2 speaks it).

use std::io::{Read, Write};
use std::net::TcpListener;

const VERSION_1: u32 = 0x8001_0000;
const REPLY: u32 = 2;
const T_STOP: u8 = 0;
const T_BOOL: u8 = 2;
const T_I32: u8 = 8;
const T_STRING: u8 = 11;
const T_STRUCT: u8 = 12;
const T_MAP: u8 = 13;
const T_LIST: u8 = 15;

fn i32_be(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Serves on 127.0.0.1 from a thread; returns the address. `ports`: (number, iface).
pub fn serve(ports: Vec<(i32, String)>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding the fake Thrift server");
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { continue };
            let mut buf = vec![0u8; 4096];
            let Ok(n) = s.read(&mut buf) else { continue };
            if n < 12 {
                continue;
            }
            // version word, name, seq; the arguments are not needed for the answers.
            let name_len = i32_be(&buf, 4) as usize;
            let name = String::from_utf8_lossy(&buf[8..8 + name_len]).to_string();
            let seq = i32_be(&buf, 8 + name_len);
            let method = name.split_once(':').map(|(_, m)| m).unwrap_or(&name);
            let mut out = Vec::new();
            out.extend_from_slice(&((VERSION_1 | REPLY) as i32).to_be_bytes());
            put_str(&mut out, method);
            out.extend_from_slice(&seq.to_be_bytes());
            if method == "bm_dev_mgr_show_ports" {
                out.extend_from_slice(&[T_LIST, 0, 0, T_STRUCT]);
                out.extend_from_slice(&(ports.len() as i32).to_be_bytes());
                for (port, iface) in &ports {
                    out.extend_from_slice(&[T_I32, 0, 1]);
                    out.extend_from_slice(&port.to_be_bytes());
                    out.extend_from_slice(&[T_STRING, 0, 2]);
                    put_str(&mut out, iface);
                    out.extend_from_slice(&[T_BOOL, 0, 3, 1]);
                    out.extend_from_slice(&[T_MAP, 0, 4, T_STRING, T_STRING]);
                    out.extend_from_slice(&0i32.to_be_bytes());
                    out.push(T_STOP);
                }
            }
            out.push(T_STOP);
            let _ = s.write_all(&out);
        }
    });
    addr
}
