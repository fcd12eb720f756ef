//! Publishing to every channel, and to one client of a channel.

use std::collections::BTreeMap;

use crate::common::server::*;

#[tokio::test]
async fn publish_to_all_channels_reaches_every_subscriber() {
    let server = Server::start(config()).await;
    let mut streams = BTreeMap::new();
    for channel in ["a", "b", "c"] {
        let mut stream = open_stream(server.addr, &format!("/channel/{channel}"), &[]).await;
        stream.next_block().await.expect("cursor");
        streams.insert(channel, stream);
    }
    let mut second_a = open_stream(server.addr, "/channel/a", &[]).await;
    second_a.next_block().await.expect("cursor");

    let answer = server
        .publish("/channel", r#"{"event":"notice","data":{"all":true}}"#)
        .await;
    assert_eq!(answer["channels"], 3, "{answer}");
    assert_eq!(answer["delivered"], 4, "{answer}");
    assert_eq!(answer["duplicate"], false);
    for stream in streams.values_mut().chain([&mut second_a]) {
        let frame = stream.next_event().await.expect("event");
        assert_eq!(frame.event.as_deref(), Some("notice"));
        assert_eq!(frame.data.as_deref(), Some(r#"{"all":true}"#));
    }
}

#[tokio::test]
async fn publish_to_one_client_reaches_only_that_client() {
    let server = Server::start(config()).await;
    let mut alice = open_stream(server.addr, "/channel/room/client/alice", &[]).await;
    let mut bob = open_stream(server.addr, "/channel/room/client/bob", &[]).await;
    let bob_opening = Frame::parse(&bob.next_block().await.expect("cursor"))
        .id
        .expect("opening cursor");
    let mut anonymous = open_stream(server.addr, "/channel/room", &[]).await;

    let status = server.get_json("/status").await;
    let clients = status["channels"]["room"].as_array().expect("room listed");
    assert!(
        clients.contains(&"alice".into()) && clients.contains(&"bob".into()),
        "{status}"
    );
    assert_eq!(clients.len(), 3);

    let answer = server
        .publish(
            "/channel/room/client/alice",
            r#"{"event":"dm","data":"for alice"}"#,
        )
        .await;
    assert_eq!(answer["delivered"], 1, "{answer}");
    server
        .publish("/channel/room", r#"{"data":"everyone"}"#)
        .await;

    let got = events_until(&mut alice, r#""everyone""#).await;
    assert_eq!(datas(&got), vec![r#""for alice""#.to_owned()]);
    assert_eq!(got[0].event.as_deref(), Some("dm"));
    assert!(events_until(&mut bob, r#""everyone""#).await.is_empty());
    assert!(events_until(&mut anonymous, r#""everyone""#)
        .await
        .is_empty());

    // A client that is not connected (here or anywhere) is 404.
    let (status, error) = server
        .post("/channel/room/client/carol", r#"{"data":1}"#)
        .await;
    assert_eq!(status, 404);
    assert!(error["error"].as_str().expect("error").contains("carol"));
    drop(bob);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, _) = server
            .post("/channel/room/client/bob", r#"{"data":1}"#)
            .await;
        if status == 404 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob still counted as connected"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Bob resuming from before the private event does not get it replayed.
    server
        .publish("/channel/room", r#"{"data":"marker"}"#)
        .await;
    let mut again = open_stream(
        server.addr,
        "/channel/room/client/bob",
        &[("Last-Event-ID", &bob_opening)],
    )
    .await;
    let replayed = events_until(&mut again, r#""marker""#).await;
    assert_eq!(datas(&replayed), vec![r#""everyone""#.to_owned()]);
}

/// The attack on assigned ids: read one from `/status`, take the ids that would come
/// next as chosen ids, and wait for the next ordinary subscriber. Its private events
/// must reach it alone.
#[tokio::test]
async fn an_assigned_client_id_cannot_be_taken_ahead() {
    let server = Server::start(config()).await;
    let mut first = open_stream(server.addr, "/channel/room", &[]).await;
    first.next_block().await.expect("cursor");
    let status = server.get_json("/status").await;
    let assigned = status["channels"]["room"][0]
        .as_str()
        .expect("an assigned id")
        .to_owned();
    // Guesses in the shape of the assigned id: the counters after it, and its
    // neighbours if the tail is a number.
    let (prefix, tail) = assigned.rsplit_once('-').expect("origin-suffix");
    let mut guesses: Vec<String> = (1..=20).map(|n| format!("{prefix}-{n}")).collect();
    if let Ok(n) = tail.parse::<u64>() {
        guesses.extend((1..=5).map(|k| format!("{prefix}-{}", n + k)));
    }
    guesses.retain(|guess| *guess != assigned);
    let mut squatters = Vec::new();
    for guess in &guesses {
        let mut stream =
            open_stream(server.addr, &format!("/channel/room/client/{guess}"), &[]).await;
        stream.next_block().await.expect("cursor");
        squatters.push(stream);
    }
    let mut victim = open_stream(server.addr, "/channel/room", &[]).await;
    victim.next_block().await.expect("cursor");
    let status = server.get_json("/status").await;
    let clients: Vec<&str> = status["channels"]["room"]
        .as_array()
        .expect("room listed")
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    let victim_id = clients
        .iter()
        .find(|c| **c != assigned && !guesses.iter().any(|g| g == *c))
        .expect("the victim's id is none of the guesses");
    assert_eq!(clients.len(), guesses.len() + 2, "{status}");
    let answer = server
        .publish(
            &format!("/channel/room/client/{victim_id}"),
            r#"{"data":"private"}"#,
        )
        .await;
    assert_eq!(answer["delivered"], 1, "{answer}");
    let frame = victim.next_event().await.expect("the private event");
    assert_eq!(frame.data.as_deref(), Some(r#""private""#));
}
