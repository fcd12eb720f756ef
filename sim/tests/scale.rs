//! The scale table's code on small clusters: the figures it prints are sane.

use std::time::Duration;

use sse_cluster_sim::scale::{measure, table_row, Measured, Setup};

fn small(nodes: usize) -> Measured {
    let setup = Setup {
        events: 20,
        interval: Duration::from_millis(20),
        join_at: Duration::from_secs(3),
        publish_at: Duration::from_secs(8),
        settle: Duration::from_secs(2),
        ..Setup::new(nodes, 0.0)
    };
    let measured = measure(&setup).expect("the simulation ran");
    eprint!("{}", table_row(&measured));
    measured
}

#[test]
fn small_clusters_deliver_once_and_relay_cost_grows_with_size() {
    let three = small(3);
    let five = small(5);
    for m in [&three, &five] {
        let nodes = m.setup.nodes;
        assert!(
            m.exactly_once(),
            "{nodes} nodes: {} missing, {} twice, {} of {} published",
            m.missing,
            m.duplicates,
            m.published,
            m.setup.events
        );
        assert_eq!(m.owed, 20 * nodes as u64);
        assert_eq!(
            m.reach_ms.len(),
            20,
            "{nodes} nodes: an event missed a node"
        );
        assert!(m.mesh_formed_ms.is_some(), "{nodes} nodes: no full mesh");
        assert!(m.join_seen_ms.is_some(), "{nodes} nodes: newcomer unseen");
        assert!(
            m.join_first_event_ms.is_some(),
            "{nodes} nodes: newcomer got nothing"
        );
        // A POST, a relay hop and an SSE write take a 1 ms link each at least; the
        // accepting node's own subscriber needs no relay hop.
        assert!(
            m.reach_percentile(0.5).unwrap() >= 3,
            "{nodes} nodes: {m:?}"
        );
        assert_eq!(m.own_ms.len(), 20);
        assert!(m.own_percentile(0.5) < m.reach_percentile(0.5), "{m:?}");
        assert_eq!(
            m.redials, 0,
            "{nodes} nodes: a healthy relay stream was dialled again"
        );
        // Each peer gets every event: a segment and a frame each, at least.
        assert!(m.relay_segments_per_event() >= (nodes - 1) as f64);
        assert!(m.relay_bytes_per_event() >= 50.0 * (nodes - 1) as f64);
    }
    assert!(
        five.relay_bytes_per_event() > three.relay_bytes_per_event() * 1.5,
        "relay bytes per event: {} with 3 nodes, {} with 5",
        three.relay_bytes_per_event(),
        five.relay_bytes_per_event()
    );
}
