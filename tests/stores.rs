//! Stores through a raw Rust client, where timing matters: a join answered while another
//! client keeps changing the store still gets every change after its reply, starting at
//! the reply's version (docs/contract.md, "Stores over the wire": ordering).

mod support;

use serde_json::{json, Value};
use support::Client;

/// Reads frames until the reply to `msg_ref` on `topic`; returns it.
async fn reply_to(client: &mut Client, topic: &str, msg_ref: &str) -> Value {
    loop {
        let frame = client.recv_json().await;
        if frame[2] == topic && frame[3] == "phx_reply" && frame[1] == msg_ref {
            return frame[4].clone();
        }
    }
}

/// Reads frames until the next `patch` or `state` on `topic`.
async fn next_change(client: &mut Client, topic: &str) -> (String, Value) {
    loop {
        let frame = client.recv_json().await;
        if frame[2] == topic && (frame[3] == "patch" || frame[3] == "state") {
            return (frame[3].as_str().unwrap().to_owned(), frame[4].clone());
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn every_join_gets_the_changes_after_its_reply_from_its_version_on() {
    let server = support::start_app();
    let topic = "store:todos";
    let mut writer = Client::v2(&server, "writer").await;
    let joined = writer.join(topic, "1", json!({})).await;
    assert_eq!(joined[4]["status"], "ok", "{joined}");
    writer
        .send(
            json!("1"),
            json!("add"),
            topic,
            "add",
            json!({"text": "busy"}),
        )
        .await;
    let added = reply_to(&mut writer, topic, "add").await;
    let id = added["response"]["version"].as_u64().unwrap();

    // The writer toggles its todo over and over, 100 toggles in flight at a time, while
    // the joiner joins and leaves again and again.
    let busy = tokio::spawn(async move {
        for batch in 0..30 {
            for n in 0..100 {
                let msg_ref = json!(format!("t{batch}.{n}"));
                writer
                    .send(json!("1"), msg_ref, topic, "toggle", json!({"id": id}))
                    .await;
            }
            reply_to(&mut writer, topic, &format!("t{batch}.99")).await;
        }
        writer
    });

    let mut joiner = Client::v2(&server, "joiner").await;
    let (mut ops_replies, mut held) = (0, None);
    for round in 0..40 {
        let join_ref = format!("j{round}");
        // Every other join says it holds the version of the previous reply.
        let payload = match (&held, round % 2) {
            (Some((epoch, version)), 1) => json!({"epoch": epoch, "version": version}),
            _ => json!({}),
        };
        joiner
            .send(json!(join_ref), json!(join_ref), topic, "phx_join", payload)
            .await;
        let reply = reply_to(&mut joiner, topic, &join_ref).await;
        assert_eq!(reply["status"], "ok", "{reply}");
        let version = reply["response"]["version"].as_u64().unwrap();
        if reply["response"].get("ops").is_some() {
            ops_replies += 1;
        }
        held = Some((reply["response"]["epoch"].clone(), version));
        // One change of its own, so that a change follows the reply whatever the writer
        // is doing.
        let act_ref = format!("a{round}");
        joiner
            .send(
                json!(join_ref),
                json!(act_ref),
                topic,
                "toggle",
                json!({"id": id}),
            )
            .await;
        let (event, change) = next_change(&mut joiner, topic).await;
        match event.as_str() {
            "patch" => assert_eq!(
                change["from"].as_u64(),
                Some(version),
                "round {round}: the first patch after a reply at {version} is {change}"
            ),
            _ => assert!(change["version"].as_u64() > Some(version), "{change}"),
        }
        let leave_ref = format!("l{round}");
        joiner
            .send(
                json!(join_ref),
                json!(leave_ref),
                topic,
                "phx_leave",
                json!({}),
            )
            .await;
        reply_to(&mut joiner, topic, &leave_ref).await;
    }
    assert!(ops_replies > 0, "joins from a retained version get ops");
    let mut writer = busy.await.unwrap();
    writer
        .send(json!("1"), json!("rm"), topic, "remove", json!({"id": id}))
        .await;
    assert_eq!(reply_to(&mut writer, topic, "rm").await["status"], "ok");
    server.stop();
}
