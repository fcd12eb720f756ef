//! Loopback ports and plain JSON reads for tests.

use std::net::{TcpListener, UdpSocket};

/// A free TCP port and a free UDP port on loopback: a node's HTTP and gossip ports.
pub(crate) fn free_ports() -> (u16, u16) {
    let tcp = TcpListener::bind("127.0.0.1:0").expect("free tcp port");
    let udp = UdpSocket::bind("127.0.0.1:0").expect("free udp port");
    (
        tcp.local_addr().expect("tcp addr").port(),
        udp.local_addr().expect("udp addr").port(),
    )
}

/// GETs `url` and parses its answer as JSON.
pub(crate) async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    client
        .get(url)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON answer")
}
