//! 100 ADDs at once, then 100 DELs at once: all succeed, nothing leaks.

mod common;

use common::*;

#[test]
fn hundred_parallel_add_then_del() {
    let w = World::new();
    let mut c = w.conf("1.0.0");
    // The controller commits registrations one at a time; 100 at once queue up.
    c["controllerTimeoutMs"] = serde_json::json!(60_000);
    let nss: Vec<Netns> = (0..100).map(|_| Netns::new()).collect();
    let results: Vec<Out> = std::thread::scope(|s| {
        let hs: Vec<_> = nss
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let w = &w;
                let c = &c;
                s.spawn(move || w.p4lb("ADD", &format!("par{i}"), &ns.path, "", c))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &results {
        r.ok();
    }
    assert_eq!(w.host_links().len(), 100);
    assert_eq!(w.leases().len(), 100);
    assert_eq!(w.endpoints().len(), 100);
    let outs: Vec<Out> = std::thread::scope(|s| {
        let hs: Vec<_> = nss
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let w = &w;
                let mut c = c.clone();
                c["prevResult"] = results[i].json();
                s.spawn(move || w.p4lb("DEL", &format!("par{i}"), &ns.path, "", &c))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for o in &outs {
        o.ok();
    }
    w.assert_clean();
}
