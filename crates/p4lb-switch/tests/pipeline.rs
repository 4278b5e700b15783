//! The pipeline in-process against frames no fixture row can list: random garbage. The
//! data-plane cases themselves are rows in tests/dataplane.rs.

mod support;

use std::net::Ipv4Addr;

use p4lb_controller::addr::mac_u64;
use p4lb_p4::{entries, DropReason};
use p4lb_switch::pipeline::{self, Verdict};
use p4lb_switch::{serve, GrpcAddr, SwitchConfig};
use support::frames::Flow;
use support::p4rt::{self, Session};

#[tokio::test]
async fn random_garbage_never_panics_and_short_frames_are_parser_errors() {
    let handle = serve(SwitchConfig {
        grpc_addr: GrpcAddr::Tcp("127.0.0.1:0".parse().unwrap()),
        insecure_loopback: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let ch = p4rt::channel(&handle.endpoint()).await;
    let (mut s, code) = Session::open(ch, 0, 1).await;
    assert_eq!(code, 0);
    s.set_pipeline(Vec::new()).await.unwrap();
    let dp = handle.device.installed().unwrap().dp.clone();
    let b1: u32 = 0x0a01_0001;
    s.insert(vec![entries::route_to_port(
        Ipv4Addr::from(b1),
        32,
        2,
        mac_u64(&[0x02, 0, 0, 0, 0x0b, 0x01]),
    )])
    .await;
    let parser_errors = DropReason::ParserError.index() as i64;
    // Garbage shorter than an Ethernet header is a parser error whatever its bytes.
    let mut expected_errors = 0;
    let mut x: u32 = 99;
    for _ in 0..20000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let len = (x >> 16) as usize % 128;
        let mut f: Vec<u8> = (0..len)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        if len > 14 && x.is_multiple_of(3) {
            f[12] = 0x08;
            f[13] = if x.is_multiple_of(2) { 0x00 } else { 0x06 };
        }
        let v = pipeline::process(&dp, &mut f, 1, false);
        if len < 14 {
            assert_eq!(v, Verdict::Drop, "{len} bytes");
            expected_errors += 1;
        }
    }
    let (errs, _) = s.counter(p4lb_p4::externs::drops::ID, parser_errors).await;
    assert!(errs >= expected_errors, "{errs} < {expected_errors}");
    // The switch still forwards afterwards.
    let mut ok = Flow::udp(0x0a00_0001, 1, b1, 9).frame(b"ok");
    assert_eq!(
        pipeline::process(&dp, &mut ok, 1, false),
        Verdict::Forward(2)
    );
    handle.shutdown().await;
}
