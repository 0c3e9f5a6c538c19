//! The Phoenix wire protocol through a real WebSocket client: admission, serializers,
//! the channel lifecycle, limits and bad input (docs/protocol.md §1–§6, §10).

mod support;

use std::time::Duration;

use fluxwire::{Config, RunningServer};
use serde_json::json;
use support::{eventually, handshake_status, head, reply, start, start_with, Client};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::MaybeTlsStream;

#[tokio::test]
async fn refuses_before_upgrade_with_403() {
    let server = start();
    let base = format!("ws://{}/socket/websocket", server.addr());
    let cases = [
        format!("{base}?vsn=2.0.0"),
        format!("{base}?user=&vsn=2.0.0"),
        format!("{base}?user=a&vsn=3.0.0"),
        format!("{base}?user=a&vsn=2.1.0"),
        format!("{base}?user=a&vsn%5B%5D=2.0.0"),
    ];
    for url in cases {
        assert_eq!(
            handshake_status(url.clone(), &[]).await,
            StatusCode::FORBIDDEN,
            "{url}"
        );
    }
    let ok = format!("{base}?user=a&&vsn=2.0.0&");
    assert_eq!(
        handshake_status(ok, &[]).await,
        StatusCode::SWITCHING_PROTOCOLS
    );
    let status_mount = format!("ws://{}/status/websocket?user=a", server.addr());
    assert_eq!(
        handshake_status(status_mount, &[]).await,
        StatusCode::SWITCHING_PROTOCOLS
    );
    server.stop();
}

#[tokio::test]
async fn origin_check_defaults_to_the_request_host() {
    let server = start();
    let addr = server.addr();
    let url = format!("ws://{addr}/socket/websocket?user=a&vsn=2.0.0");
    let same = format!("http://{addr}");
    assert_eq!(
        handshake_status(url.clone(), &[("origin", &same)]).await,
        StatusCode::SWITCHING_PROTOCOLS
    );
    assert_eq!(
        handshake_status(url.clone(), &[("origin", "http://evil.example")]).await,
        StatusCode::FORBIDDEN
    );
    server.stop();

    let mut config = Config::ephemeral();
    config.check_origin = fluxwire::OriginPolicy::parse("https://*.example.com").unwrap();
    let server = start_with(config);
    let url = format!("ws://{}/socket/websocket?user=a&vsn=2.0.0", server.addr());
    assert_eq!(
        handshake_status(url.clone(), &[("origin", "https://app.example.com")]).await,
        StatusCode::SWITCHING_PROTOCOLS
    );
    assert_eq!(
        handshake_status(url, &[("origin", "https://example.org")]).await,
        StatusCode::FORBIDDEN
    );
    server.stop();
}

#[tokio::test]
async fn selects_the_phoenix_subprotocol_when_an_auth_token_is_offered() {
    let server = start();
    let url = format!("ws://{}/socket/websocket?user=a&vsn=2.0.0", server.addr());
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "phoenix, base64url.bearer.phx.dG9rZW4".parse().unwrap(),
    );
    let (_, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "phoenix");
    server.stop();
}

#[tokio::test]
async fn the_appendix_session_in_v2() {
    let server = start();
    let mut c = Client::v2(&server, "alice").await;
    let r = c.join("echo:lobby", "3", json!({})).await;
    assert_eq!(
        r,
        reply(
            json!("3"),
            json!("3"),
            "echo:lobby",
            "ok",
            json!({"topic": "echo:lobby", "user": "alice"})
        )
    );

    c.send(
        json!("3"),
        json!("4"),
        "echo:lobby",
        "shout",
        json!({"body": "hi"}),
    )
    .await;
    let mut got = [c.recv_json().await, c.recv_json().await];
    got.sort_by_key(|m| m[3].as_str().unwrap().to_owned());
    assert_eq!(
        got[0],
        reply(json!("3"), json!("4"), "echo:lobby", "ok", json!({}))
    );
    assert_eq!(
        got[1],
        json!([null, null, "echo:lobby", "shout", {"body": "hi"}])
    );

    let r = c.join("room:nope!", "5", json!({})).await;
    assert_eq!(
        r,
        reply(
            json!(null),
            json!("5"),
            "room:nope!",
            "error",
            json!({"reason": "unmatched topic"})
        )
    );

    c.send(json!(null), json!("6"), "phoenix", "heartbeat", json!({}))
        .await;
    assert_eq!(
        c.recv_json().await,
        reply(json!(null), json!("6"), "phoenix", "ok", json!({}))
    );

    c.send(json!("3"), json!("7"), "echo:lobby", "phx_leave", json!({}))
        .await;
    assert_eq!(
        c.recv_json().await,
        reply(json!("3"), json!("7"), "echo:lobby", "ok", json!({}))
    );
    assert_eq!(
        c.recv_json().await,
        json!(["3", "3", "echo:lobby", "phx_close", {}])
    );

    c.send(
        json!("3"),
        json!("8"),
        "echo:lobby",
        "new_msg",
        json!({"body": "late"}),
    )
    .await;
    assert_eq!(
        c.recv_json().await,
        reply(
            json!(null),
            json!("8"),
            "echo:lobby",
            "error",
            json!({"reason": "unmatched topic"})
        )
    );
    server.stop();
}

#[tokio::test]
async fn v1_objects_without_join_ref_and_without_vsn() {
    let server = start();
    for query in ["user=v1", "user=v1&vsn=1.0.0"] {
        let mut c = Client::connect(&server, query).await;
        c.send_text(
            r#"{"topic":"echo:v1","event":"phx_join","payload":{},"ref":"1","join_ref":"1"}"#,
        )
        .await;
        assert_eq!(
            c.recv_json().await,
            json!({"topic":"echo:v1","event":"phx_reply","ref":"1","payload":{"status":"ok","response":{"topic":"echo:v1","user":"v1"}}})
        );
        c.send_text(r#"{"topic":"echo:v1","event":"shout","payload":{"a":1},"ref":"2"}"#)
            .await;
        let mut got = [c.recv_json().await, c.recv_json().await];
        got.sort_by_key(|m| m["event"].as_str().unwrap().to_owned());
        assert_eq!(
            got[0],
            json!({"topic":"echo:v1","event":"phx_reply","ref":"2","payload":{"status":"ok","response":{}}})
        );
        assert_eq!(
            got[1],
            json!({"topic":"echo:v1","event":"shout","ref":null,"payload":{"a":1}})
        );
        c.send_text(r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":7}"#)
            .await;
        assert_eq!(
            c.recv_json().await,
            json!({"topic":"phoenix","event":"phx_reply","ref":7,"payload":{"status":"ok","response":{}}})
        );
        c.send_binary(vec![0, 0, 0, 1, 1, b'x', b'y']).await;
        assert_eq!(c.expect_close().await, 1003);
    }
    server.stop();
}

#[tokio::test]
async fn heartbeat_refs_come_back_exactly() {
    let server = start();
    let mut c = Client::v2(&server, "hb").await;
    for (msg_ref, join_ref) in [
        (json!("12"), json!(null)),
        (json!(5), json!("9")),
        (json!(null), json!(null)),
    ] {
        c.send(
            join_ref,
            msg_ref.clone(),
            "phoenix",
            "heartbeat",
            json!({"x": 1}),
        )
        .await;
        assert_eq!(
            c.recv_json().await,
            reply(json!(null), msg_ref, "phoenix", "ok", json!({}))
        );
    }
    c.send(json!("1"), json!("1"), "phoenix", "phx_join", json!({}))
        .await;
    assert_eq!(
        c.recv_json().await,
        reply(
            json!(null),
            json!("1"),
            "phoenix",
            "error",
            json!({"reason": "unmatched topic"})
        )
    );
    server.stop();
}

#[tokio::test]
async fn join_refusals() {
    let mut config = Config::ephemeral();
    config.max_channels = 2;
    let server = start_with(config);
    let mut c = Client::v2(&server, "bob").await;
    let r = c.join("echo:r", "1", json!({"refuse": true})).await;
    assert_eq!(
        r,
        reply(
            json!("1"),
            json!("1"),
            "echo:r",
            "error",
            json!({"reason": "refused"})
        )
    );
    let r = c.join("echo:r", "2", json!({"crash": true})).await;
    assert_eq!(
        r,
        reply(
            json!("2"),
            json!("2"),
            "echo:r",
            "error",
            json!({"reason": "join crashed"})
        )
    );
    let r = c.join("echo:r", "3", json!([1, 2])).await;
    assert_eq!(
        r,
        reply(
            json!("3"),
            json!("3"),
            "echo:r",
            "error",
            json!({"reason": "invalid payload"})
        )
    );
    // (A topic over 255 bytes closes the connection with 1008: tests/websocket.rs.)
    assert_eq!(c.join("echo:a", "5", json!({})).await[4]["status"], "ok");
    assert_eq!(c.join("echo:b", "6", json!({})).await[4]["status"], "ok");
    let r = c.join("echo:c", "7", json!({})).await;
    assert_eq!(
        r,
        reply(
            json!("7"),
            json!("7"),
            "echo:c",
            "error",
            json!({"reason": "too many channels joined"})
        )
    );
    // A refused join leaves nothing behind: a message on it is unmatched.
    c.send(json!("1"), json!("8"), "echo:r", "echo", json!({}))
        .await;
    assert_eq!(
        c.recv_json().await[4]["response"]["reason"],
        "unmatched topic"
    );
    server.stop();
}

#[tokio::test]
async fn a_connection_may_join_100_channels_by_default() {
    // Config::ephemeral() has every flag's default, max_channels included.
    let server = start();
    let mut c = Client::v2(&server, "many").await;
    for i in 0..100 {
        let (topic, join_ref) = (format!("echo:many-{i}"), i.to_string());
        let r = c.join(&topic, &join_ref, json!({})).await;
        assert_eq!(r[4]["status"], "ok", "join {i}: {r}");
    }
    assert_eq!(
        c.join("echo:one-too-many", "100", json!({})).await,
        reply(
            json!("100"),
            json!("100"),
            "echo:one-too-many",
            "error",
            json!({"reason": "too many channels joined"})
        )
    );
    // A leave frees a place.
    c.send(
        json!("0"),
        json!("101"),
        "echo:many-0",
        "phx_leave",
        json!({}),
    )
    .await;
    assert_eq!(c.recv_json().await[3], "phx_reply");
    assert_eq!(c.recv_json().await[3], "phx_close");
    let r = c.join("echo:one-too-many", "102", json!({})).await;
    assert_eq!(r[4]["status"], "ok", "{r}");
    server.stop();
}

#[tokio::test]
async fn duplicate_join_closes_the_old_instance() {
    let server = start();
    let mut c = Client::v2(&server, "dup").await;
    assert_eq!(c.join("echo:d", "3", json!({})).await[4]["status"], "ok");
    c.send(json!("9"), json!("9"), "echo:d", "phx_join", json!({}))
        .await;
    assert_eq!(
        c.recv_json().await,
        json!(["3", "3", "echo:d", "phx_close", {}])
    );
    assert_eq!(
        head(&c.recv_json().await, 4),
        json!(["9", "9", "echo:d", "phx_reply"])
    );
    // The new instance answers with the new join ref.
    c.send(json!("9"), json!("10"), "echo:d", "echo", json!({"v": 1}))
        .await;
    assert_eq!(
        c.recv_json().await,
        reply(json!("9"), json!("10"), "echo:d", "ok", json!({"v": 1}))
    );
    server.stop();
}

#[tokio::test]
async fn stale_join_refs_are_dropped_and_null_is_accepted() {
    let server = start();
    let mut c = Client::v2(&server, "stale").await;
    c.join("echo:s", "3", json!({})).await;
    c.send(json!("2"), json!("4"), "echo:s", "echo", json!({}))
        .await;
    c.send(json!("2"), json!("5"), "echo:s", "phx_leave", json!({}))
        .await;
    c.send(json!(null), json!("6"), "echo:s", "echo", json!({"n": 6}))
        .await;
    // Only the null-join_ref message is answered, with the instance's join ref.
    assert_eq!(
        c.recv_json().await,
        reply(json!("3"), json!("6"), "echo:s", "ok", json!({"n": 6}))
    );
    server.stop();
}

#[tokio::test]
async fn leave_of_an_unjoined_topic_succeeds_quietly() {
    let server = start();
    let mut c = Client::v2(&server, "lv").await;
    c.send(json!("4"), json!("5"), "echo:none", "phx_leave", json!({}))
        .await;
    assert_eq!(
        c.recv_json().await,
        reply(json!("4"), json!("5"), "echo:none", "ok", json!({}))
    );
    c.expect_nothing_pending().await;
    server.stop();
}

#[tokio::test]
async fn leave_then_join_back_to_back() {
    let server = start();
    let mut c = Client::v2(&server, "lj").await;
    c.join("echo:lj", "1", json!({})).await;
    c.send(json!("1"), json!("2"), "echo:lj", "phx_leave", json!({}))
        .await;
    c.send(json!("3"), json!("3"), "echo:lj", "phx_join", json!({}))
        .await;
    assert_eq!(
        c.recv_json().await,
        reply(json!("1"), json!("2"), "echo:lj", "ok", json!({}))
    );
    assert_eq!(
        c.recv_json().await,
        json!(["1", "1", "echo:lj", "phx_close", {}])
    );
    assert_eq!(head(&c.recv_json().await, 2), json!(["3", "3"]));
    c.send(json!("3"), json!("4"), "echo:lj", "echo", json!({}))
        .await;
    assert_eq!(
        c.recv_json().await,
        reply(json!("3"), json!("4"), "echo:lj", "ok", json!({}))
    );
    server.stop();
}

#[tokio::test]
async fn messages_wait_for_a_join_in_progress() {
    let server = start();
    let mut c = Client::v2(&server, "slow").await;
    c.send(
        json!("1"),
        json!("1"),
        "echo:slow",
        "phx_join",
        json!({"delay_ms": 200}),
    )
    .await;
    c.send(json!("1"), json!("2"), "echo:slow", "push_me", json!({}))
        .await;
    c.send(json!("1"), json!("3"), "echo:slow", "echo", json!({"n": 3}))
        .await;
    assert_eq!(
        head(&c.recv_json().await, 4),
        json!(["1", "1", "echo:slow", "phx_reply"])
    );
    assert_eq!(
        c.recv_json().await,
        json!(["1", null, "echo:slow", "pushed", {"n": 1}])
    );
    assert_eq!(
        c.recv_json().await,
        reply(json!("1"), json!("2"), "echo:slow", "ok", json!({}))
    );
    assert_eq!(
        c.recv_json().await,
        reply(json!("1"), json!("3"), "echo:slow", "ok", json!({"n": 3}))
    );
    server.stop();
}

/// Pushes and broadcasts take different paths to the client (the session's outlet
/// directly, and pubsub from the publisher's thread); what one channel sends still
/// arrives in the order it sent it, and a member whose join is still in progress gets
/// the broadcast after its join reply.
#[tokio::test]
async fn pushes_broadcasts_and_replies_keep_the_channels_order() {
    let server = start();
    let mut a = Client::v2(&server, "a").await;
    a.join("echo:order", "1", json!({})).await;
    let mut b = Client::v2(&server, "b").await;
    b.send(
        json!("5"),
        json!("5"),
        "echo:order",
        "phx_join",
        json!({"delay_ms": 300}),
    )
    .await;
    // B's join is subscribed (it subscribes before waiting) but not yet answered.
    let pubsub = server.services().pubsub.clone();
    eventually("B's join to subscribe", || {
        pubsub.subscriber_count("echo:order") == 2
    })
    .await;
    a.send(
        json!("1"),
        json!("2"),
        "echo:order",
        "interleave",
        json!({}),
    )
    .await;
    assert_eq!(
        a.recv_json().await,
        json!(["1", null, "echo:order", "pushed", {"n": 1}])
    );
    assert_eq!(
        a.recv_json().await,
        json!([null, null, "echo:order", "shout", {"n": 2}])
    );
    assert_eq!(
        a.recv_json().await,
        json!(["1", null, "echo:order", "pushed", {"n": 3}])
    );
    assert_eq!(
        a.recv_json().await,
        reply(json!("1"), json!("2"), "echo:order", "ok", json!({"n": 4}))
    );
    assert_eq!(
        head(&b.recv_json().await, 4),
        json!(["5", "5", "echo:order", "phx_reply"])
    );
    assert_eq!(
        b.recv_json().await,
        json!([null, null, "echo:order", "shout", {"n": 2}])
    );
    server.stop();
}

#[tokio::test]
async fn async_replies_keep_their_order() {
    let server = start();
    let mut c = Client::v2(&server, "later").await;
    c.join("echo:later", "1", json!({})).await;
    c.send(json!("1"), json!("2"), "echo:later", "later", json!({}))
        .await;
    c.send(json!("1"), json!("3"), "echo:later", "echo", json!({}))
        .await;
    assert_eq!(
        c.recv_json().await,
        reply(
            json!("1"),
            json!("2"),
            "echo:later",
            "ok",
            json!({"later": true})
        )
    );
    assert_eq!(
        c.recv_json().await,
        reply(json!("1"), json!("3"), "echo:later", "ok", json!({}))
    );
    server.stop();
}

#[tokio::test]
async fn a_crash_ends_only_its_channel() {
    let server = start();
    let mut c = Client::v2(&server, "crash").await;
    c.join("echo:a", "1", json!({})).await;
    c.join("echo:b", "2", json!({})).await;
    c.send(json!("1"), json!("3"), "echo:a", "crash", json!({}))
        .await;
    assert_eq!(
        c.recv_json().await,
        json!(["1", "1", "echo:a", "phx_error", {"reason": "channel_crash"}])
    );
    c.send(
        json!("2"),
        json!("4"),
        "echo:b",
        "echo",
        json!({"alive": true}),
    )
    .await;
    assert_eq!(
        c.recv_json().await,
        reply(
            json!("2"),
            json!("4"),
            "echo:b",
            "ok",
            json!({"alive": true})
        )
    );
    c.send(json!("1"), json!("5"), "echo:a", "echo", json!({}))
        .await;
    assert_eq!(
        c.recv_json().await[4]["response"]["reason"],
        "unmatched topic"
    );
    // phoenix.js rejoins after a crash; that works.
    assert_eq!(c.join("echo:a", "6", json!({})).await[4]["status"], "ok");
    server.stop();
}

/// `c` still has `topic` joined with `join_ref`, and it answers.
async fn still_answers(c: &mut Client, topic: &str, join_ref: &str) {
    c.send(
        json!(join_ref),
        json!("alive?"),
        topic,
        "echo",
        json!({"alive": true}),
    )
    .await;
    assert_eq!(
        c.recv_json().await,
        reply(
            json!(join_ref),
            json!("alive?"),
            topic,
            "ok",
            json!({"alive": true})
        ),
        "{topic} still answers"
    );
}

/// `topic` is not joined on `c` (any more): a message on it is unmatched.
async fn not_joined(c: &mut Client, topic: &str) {
    c.send(json!(null), json!("gone?"), topic, "echo", json!({}))
        .await;
    assert_eq!(
        c.recv_json().await,
        reply(
            json!(null),
            json!("gone?"),
            topic,
            "error",
            json!({"reason": "unmatched topic"})
        ),
        "{topic} is not joined"
    );
}

/// The `phx_error` a crashed instance's client gets.
fn crashed(join_ref: &str, topic: &str) -> serde_json::Value {
    json!([join_ref, join_ref, topic, "phx_error", {"reason": "channel_crash"}])
}

#[tokio::test]
async fn a_panicking_constructor_refuses_the_join_and_spares_the_connection() {
    let server = start();
    let mut c = Client::v2(&server, "ctor").await;
    c.join("echo:ok", "1", json!({})).await;
    assert_eq!(
        c.join("crash:now", "2", json!({})).await,
        reply(
            json!("2"),
            json!("2"),
            "crash:now",
            "error",
            json!({"reason": "join crashed"})
        )
    );
    not_joined(&mut c, "crash:now").await;
    still_answers(&mut c, "echo:ok", "1").await;
    assert_eq!(c.join("echo:new", "3", json!({})).await[4]["status"], "ok");
    server.stop();
}

#[tokio::test]
async fn a_panic_in_an_asynchronous_join_refuses_it() {
    let server = start();
    let mut c = Client::v2(&server, "later-join").await;
    c.join("echo:ok", "1", json!({})).await;
    assert_eq!(
        c.join("echo:cl", "2", json!({"crash_later": true})).await,
        reply(
            json!("2"),
            json!("2"),
            "echo:cl",
            "error",
            json!({"reason": "join crashed"})
        )
    );
    // It had subscribed while it waited; the refusal took that back.
    assert_eq!(server.services().pubsub.subscriber_count("echo:cl"), 0);
    not_joined(&mut c, "echo:cl").await;
    still_answers(&mut c, "echo:ok", "1").await;
    assert_eq!(c.join("echo:cl", "3", json!({})).await[4]["status"], "ok");
    server.stop();
}

#[tokio::test]
async fn a_panic_in_an_asynchronous_reply_ends_only_its_channel() {
    let server = start();
    let mut c = Client::v2(&server, "later-reply").await;
    c.join("echo:a", "1", json!({})).await;
    c.join("echo:b", "2", json!({})).await;
    c.send(json!("1"), json!("3"), "echo:a", "crash_later", json!({}))
        .await;
    // No reply to the push that crashed: the client's push times out, as in Phoenix.
    assert_eq!(c.recv_json().await, crashed("1", "echo:a"));
    assert_eq!(server.services().pubsub.subscriber_count("echo:a"), 0);
    not_joined(&mut c, "echo:a").await;
    still_answers(&mut c, "echo:b", "2").await;
    assert_eq!(c.join("echo:a", "4", json!({})).await[4]["status"], "ok");
    server.stop();
}

#[tokio::test]
async fn a_panic_in_handle_info_ends_only_its_channel() {
    let server = start();
    let mut c = Client::v2(&server, "info-crash").await;
    c.join("echo:a", "1", json!({})).await;
    c.join("echo:b", "2", json!({})).await;
    c.send(json!("1"), json!("3"), "echo:a", "crash_info", json!({}))
        .await;
    assert_eq!(
        c.recv_json().await,
        reply(json!("1"), json!("3"), "echo:a", "ok", json!({}))
    );
    assert_eq!(c.recv_json().await, crashed("1", "echo:a"));
    not_joined(&mut c, "echo:a").await;
    still_answers(&mut c, "echo:b", "2").await;
    server.stop();
}

#[tokio::test]
async fn a_panic_in_handle_out_ends_only_that_members_channel() {
    let server = start();
    let mut sender = Client::v2(&server, "sender").await;
    let mut fragile = Client::v2(&server, "fragile").await;
    let mut sturdy = Client::v2(&server, "sturdy").await;
    sender.join("echo:out", "1", json!({})).await;
    fragile.join("echo:out", "5", json!({})).await;
    fragile.join("echo:other", "6", json!({})).await;
    sturdy.join("echo:out", "7", json!({})).await;
    sender
        .send(
            json!("1"),
            json!("2"),
            "echo:out",
            "fragile",
            json!({"crash_for": "fragile"}),
        )
        .await;
    // The member whose handle_out panicked loses that channel only...
    assert_eq!(fragile.recv_json().await, crashed("5", "echo:out"));
    not_joined(&mut fragile, "echo:out").await;
    still_answers(&mut fragile, "echo:other", "6").await;
    // ...the others get the rewritten broadcast, and keep theirs.
    let rewritten = |join_ref: &str, user: &str| {
        json!([join_ref, null, "echo:out", "fragile",
            {"censored": true, "original": {"crash_for": "fragile"}, "for": user}])
    };
    assert_eq!(sturdy.recv_json().await, rewritten("7", "sturdy"));
    still_answers(&mut sturdy, "echo:out", "7").await;
    let mut got = [sender.recv_json().await, sender.recv_json().await];
    got.sort_by_key(|m| m[3].as_str().unwrap().to_owned());
    assert_eq!(got[0], rewritten("1", "sender"));
    assert_eq!(
        got[1],
        reply(json!("1"), json!("2"), "echo:out", "ok", json!({}))
    );
    assert_eq!(server.services().pubsub.subscriber_count("echo:out"), 2);
    server.stop();
}

#[tokio::test]
async fn a_panic_in_terminate_still_ends_the_instance_cleanly() {
    let server = start();
    let mut c = Client::v2(&server, "term").await;
    c.join("echo:t", "1", json!({"crash_on_terminate": true}))
        .await;
    c.join("echo:keep", "2", json!({})).await;
    c.send(json!("1"), json!("3"), "echo:t", "phx_leave", json!({}))
        .await;
    assert_eq!(
        c.recv_json().await,
        reply(json!("1"), json!("3"), "echo:t", "ok", json!({}))
    );
    assert_eq!(
        c.recv_json().await,
        json!(["1", "1", "echo:t", "phx_close", {}])
    );
    // What the framework cleans up after terminate is cleaned up all the same.
    assert_eq!(server.services().pubsub.subscriber_count("echo:t"), 0);
    not_joined(&mut c, "echo:t").await;
    still_answers(&mut c, "echo:keep", "2").await;
    assert_eq!(c.join("echo:t", "4", json!({})).await[4]["status"], "ok");
    server.stop();
}

#[tokio::test]
async fn a_channel_may_stop_itself() {
    let server = start();
    let mut c = Client::v2(&server, "stopper").await;
    c.join("echo:st", "1", json!({})).await;
    c.send(json!("1"), json!("2"), "echo:st", "stop", json!({}))
        .await;
    assert_eq!(
        c.recv_json().await,
        reply(json!("1"), json!("2"), "echo:st", "ok", json!({}))
    );
    assert_eq!(
        c.recv_json().await,
        json!(["1", "1", "echo:st", "phx_close", {}])
    );
    server.stop();
}

#[tokio::test]
async fn unknown_events_are_answered_and_the_channel_stays() {
    let server = start();
    let mut c = Client::v2(&server, "unk").await;
    c.join("echo:u", "1", json!({})).await;
    c.send(json!("1"), json!("2"), "echo:u", "nope", json!({}))
        .await;
    assert_eq!(
        c.recv_json().await,
        reply(
            json!("1"),
            json!("2"),
            "echo:u",
            "error",
            json!({"reason": "unknown event"})
        )
    );
    c.send(json!("1"), json!("3"), "echo:u", "echo", json!({}))
        .await;
    assert_eq!(c.recv_json().await[4]["status"], "ok");
    server.stop();
}

#[tokio::test]
async fn v2_binary_push_reply_and_broadcast() {
    let server = start();
    let mut a = Client::v2(&server, "a").await;
    let mut b = Client::v2(&server, "b").await;
    a.join("room:a", "3", json!({})).await;
    let r = a.join("echo:bin", "3", json!({})).await;
    assert_eq!(r[4]["status"], "ok");
    b.join("echo:bin", "1", json!({})).await;
    // Kind 0 push: join_ref "3", ref "5", topic "echo:bin", event "bin", payload 01 02 03.
    let mut push = vec![0, 1, 1, 8, 3];
    push.extend_from_slice(b"35echo:binbin");
    push.extend_from_slice(&[1, 2, 3]);
    a.send_binary(push).await;
    let mut expected = vec![1, 1, 1, 8, 2];
    expected.extend_from_slice(b"35echo:binok");
    expected.extend_from_slice(&[1, 2, 3]);
    assert_eq!(a.recv_binary().await.as_ref(), expected.as_slice());

    let mut shout = vec![0, 1, 1, 8, 9];
    shout.extend_from_slice(b"36echo:binbin_shout");
    shout.extend_from_slice(&[9, 9]);
    a.send_binary(shout).await;
    let mut broadcast = vec![2, 8, 9];
    broadcast.extend_from_slice(b"echo:binbin_shout");
    broadcast.extend_from_slice(&[9, 9]);
    assert_eq!(b.recv_binary().await.as_ref(), broadcast.as_slice());
    server.stop();
}

#[tokio::test]
async fn broadcasts_are_encoded_once_per_serializer() {
    let server = start();
    let mut clients = Vec::new();
    for i in 0..4 {
        let mut c = Client::v2(&server, &format!("u{i}")).await;
        c.join("echo:fan", "1", json!({})).await;
        clients.push(c);
    }
    let mut v1 = Client::connect(&server, "user=old").await;
    v1.send_text(r#"{"topic":"echo:fan","event":"phx_join","payload":{},"ref":"1"}"#)
        .await;
    v1.recv_json().await;
    let before = server.services().pubsub.stats();
    clients[0]
        .send(json!("1"), json!("2"), "echo:fan", "shout", json!({"x": 1}))
        .await;
    for c in &mut clients[1..] {
        assert_eq!(
            c.recv_json().await,
            json!([null, null, "echo:fan", "shout", {"x": 1}])
        );
    }
    assert_eq!(v1.recv_json().await["event"], "shout");
    let after = server.services().pubsub.stats();
    assert_eq!(after.broadcasts - before.broadcasts, 1);
    assert_eq!(after.deliveries - before.deliveries, 5);
    assert_eq!(
        after.encodes - before.encodes,
        2,
        "one V2 and one V1 encoding for five members"
    );
    server.stop();
}

#[tokio::test]
async fn broadcast_from_skips_the_sender_only() {
    let server = start();
    let mut a = Client::v2(&server, "a").await;
    let mut b = Client::v2(&server, "b").await;
    a.join("echo:bf", "1", json!({})).await;
    b.join("echo:bf", "1", json!({})).await;
    a.send(
        json!("1"),
        json!("2"),
        "echo:bf",
        "shout_others",
        json!({"k": 1}),
    )
    .await;
    assert_eq!(
        b.recv_json().await,
        json!([null, null, "echo:bf", "shout", {"k": 1}])
    );
    assert_eq!(
        a.recv_json().await,
        reply(json!("1"), json!("2"), "echo:bf", "ok", json!({}))
    );
    a.expect_nothing_pending().await;
    server.stop();
}

#[tokio::test]
async fn bad_frames_close_with_clear_codes_and_spare_others() {
    let mut config = Config::ephemeral();
    config.max_frame_size = 1024;
    let server = start_with(config);
    let mut bystander = Client::v2(&server, "ok").await;
    bystander.join("echo:x", "1", json!({})).await;
    let cases: Vec<(&str, Message, u16)> = vec![
        ("invalid JSON", "{not json".into(), 1007),
        ("not an array", r#"{"a":1}"#.into(), 1007),
        ("short array", r#"[null,"1","t","e"]"#.into(), 1007),
        ("topic not a string", r#"[null,"1",5,"e",{}]"#.into(), 1007),
        ("ref an object", r#"[null,{},"t","e",{}]"#.into(), 1007),
        ("bad binary kind", vec![7u8, 0, 0, 0, 0].into(), 1007),
        (
            "binary lengths beyond frame",
            vec![0u8, 9, 9, 9, 9, 1].into(),
            1007,
        ),
        ("too big", "x".repeat(2000).into(), 1009),
    ];
    for (what, message, code) in cases {
        let mut c = Client::v2(&server, "bad").await;
        futures_util::SinkExt::send(&mut c.ws, message)
            .await
            .unwrap();
        assert_eq!(c.expect_close().await, code, "{what}");
    }
    bystander
        .send(json!("1"), json!("2"), "echo:x", "echo", json!({}))
        .await;
    assert_eq!(bystander.recv_json().await[4]["status"], "ok");
    server.stop();
}

#[tokio::test]
async fn a_message_over_the_limit_in_several_frames_is_closed_with_1009() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    const LIMIT: usize = 1024;
    let mut config = Config::ephemeral();
    config.max_frame_size = LIMIT;
    let server = start_with(config);
    // A heartbeat padded to `size` bytes, in three frames of which only the last is final
    // when `finish` is set.
    let in_pieces = |size: usize, msg_ref: &str, finish: bool| {
        let bare = json!([null, msg_ref, "phoenix", "heartbeat", {"pad": ""}]).to_string();
        let text =
            json!([null, msg_ref, "phoenix", "heartbeat", {"pad": "x".repeat(size - bare.len())}])
                .to_string();
        assert_eq!(text.len(), size);
        let third = size / 3;
        let pieces = [&text[..third], &text[third..2 * third], &text[2 * third..]];
        pieces
            .iter()
            .enumerate()
            .map(|(i, piece)| {
                let opcode = OpCode::Data(if i == 0 { Data::Text } else { Data::Continue });
                let last = finish && i == 2;
                Message::Frame(Frame::message(piece.as_bytes().to_vec(), opcode, last))
            })
            .collect::<Vec<_>>()
    };
    // Under the limit, the pieces make one message.
    let mut c = Client::v2(&server, "pieces").await;
    for frame in in_pieces(LIMIT - 24, "1", true) {
        futures_util::SinkExt::send(&mut c.ws, frame).await.unwrap();
    }
    assert_eq!(
        c.recv_json().await,
        reply(json!(null), json!("1"), "phoenix", "ok", json!({}))
    );
    // Over it, with no piece over it alone: closed with 1009 without waiting for the
    // final frame (none is sent).
    for frame in in_pieces(LIMIT + 300, "2", false) {
        futures_util::SinkExt::send(&mut c.ws, frame).await.unwrap();
    }
    assert_eq!(c.expect_close().await, 1009);
    server.stop();
}

#[tokio::test]
async fn idle_connections_are_closed_with_1001() {
    const IDLE_MS: u64 = 300;
    let mut config = Config::ephemeral();
    config.idle_timeout_ms = IDLE_MS;
    let server = start_with(config);
    let mut c = Client::v2(&server, "idle").await;
    // Heartbeats every half timeout keep it alive past the timeout.
    let mut last_sent = std::time::Instant::now();
    for i in 0..4 {
        tokio::time::sleep(Duration::from_millis(IDLE_MS / 2)).await;
        last_sent = std::time::Instant::now();
        c.send(
            json!(null),
            json!(i.to_string()),
            "phoenix",
            "heartbeat",
            json!({}),
        )
        .await;
        assert_eq!(
            c.recv_json().await,
            reply(
                json!(null),
                json!(i.to_string()),
                "phoenix",
                "ok",
                json!({})
            )
        );
    }
    // Then silence: closed one timeout after the last message it received (which was
    // sent at `last_sent`), not before, and not ten timeouts later. The upper bound has
    // five timeouts of slack for a busy machine.
    assert_eq!(c.expect_close().await, 1001);
    let idle = last_sent.elapsed();
    assert!(
        idle >= Duration::from_millis(IDLE_MS),
        "closed after {idle:?} of silence, before the {IDLE_MS} ms timeout"
    );
    assert!(
        idle < Duration::from_millis(IDLE_MS * 5),
        "closed after {idle:?} of silence, far past the {IDLE_MS} ms timeout"
    );
    server.stop();
}

#[tokio::test]
async fn all_sockets_of_a_user_can_be_disconnected() {
    let server = start();
    let mut a1 = Client::v2(&server, "alice").await;
    let mut a2 = Client::v2(&server, "alice").await;
    let mut b = Client::v2(&server, "bob").await;
    for c in [&mut a1, &mut a2, &mut b] {
        c.join("echo:who", "1", json!({})).await;
    }
    assert_eq!(server.services().connections.len(), 3);
    assert_eq!(server.services().connections.disconnect("alice"), 2);
    assert_eq!(a1.expect_close().await, 1001);
    assert_eq!(a2.expect_close().await, 1001);
    b.send(json!("1"), json!("2"), "echo:who", "echo", json!({}))
        .await;
    assert_eq!(b.recv_json().await[4]["status"], "ok");
    server.stop();
}

#[tokio::test]
async fn connection_death_unsubscribes_its_channels() {
    let server = start();
    let mut a = Client::v2(&server, "a").await;
    a.join("echo:gone", "1", json!({})).await;
    let mut b = Client::v2(&server, "b").await;
    b.join("echo:gone", "1", json!({})).await;
    assert_eq!(server.services().pubsub.subscriber_count("echo:gone"), 2);
    drop(b);
    eventually("the subscription to end with its connection", || {
        server.services().pubsub.subscriber_count("echo:gone") == 1
    })
    .await;
    assert_eq!(server.services().connections.len(), 1);
    a.send(json!("1"), json!("2"), "echo:gone", "phx_leave", json!({}))
        .await;
    a.recv_json().await;
    a.recv_json().await;
    assert_eq!(server.services().pubsub.subscriber_count("echo:gone"), 0);
    server.stop();
}

#[tokio::test]
async fn stopping_the_server_closes_sockets_with_1001() {
    let server = start();
    let mut c = Client::v2(&server, "bye").await;
    c.join("echo:bye", "1", json!({})).await;
    let stopper = std::thread::spawn(move || server.stop());
    assert_eq!(c.expect_close().await, 1001);
    stopper.join().unwrap();
}

#[tokio::test]
async fn intercepted_broadcasts_become_per_member_pushes() {
    let server = start();
    let mut a = Client::v2(&server, "ann").await;
    let mut b = Client::v2(&server, "ben").await;
    a.join("echo:i", "1", json!({})).await;
    b.join("echo:i", "7", json!({})).await;
    a.send(
        json!("1"),
        json!("2"),
        "echo:i",
        "censored",
        json!({"w": "x"}),
    )
    .await;
    let pushed = |join_ref: &str, user: &str| json!([join_ref, null, "echo:i", "censored", {"censored": true, "original": {"w": "x"}, "for": user}]);
    assert_eq!(b.recv_json().await, pushed("7", "ben"));
    let mut got = [a.recv_json().await, a.recv_json().await];
    got.sort_by_key(|m| m[3].as_str().unwrap().to_owned());
    assert_eq!(got[0], pushed("1", "ann"));
    assert_eq!(
        got[1],
        reply(json!("1"), json!("2"), "echo:i", "ok", json!({}))
    );
    server.stop();
}

#[tokio::test]
async fn handle_info_receives_what_the_channel_sent_itself() {
    let server = start();
    let mut c = Client::v2(&server, "info").await;
    c.join("echo:info", "1", json!({})).await;
    c.send(
        json!("1"),
        json!("2"),
        "echo:info",
        "info_me",
        json!({"k": [1, 2]}),
    )
    .await;
    assert_eq!(
        c.recv_json().await,
        reply(json!("1"), json!("2"), "echo:info", "ok", json!({}))
    );
    assert_eq!(
        c.recv_json().await,
        json!(["1", null, "echo:info", "info", {"k": [1, 2]}])
    );
    server.stop();
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_with_1008_and_spares_others() {
    let server = start();
    // A small receive buffer, or loopback's autotuning (up to 32 MB here) would hide
    // the whole flood in the kernel.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let stream = socket.connect(server.addr()).await.unwrap();
    let url = format!(
        "ws://{}/socket/websocket?user=slow&vsn=2.0.0",
        server.addr()
    );
    let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
        .await
        .unwrap();
    let mut slow = Client { ws };
    let mut fast = Client::v2(&server, "fast").await;
    slow.join("echo:flood", "1", json!({})).await;
    fast.join("echo:flood", "1", json!({})).await;
    // 5,000 broadcasts of 4 KB, 20 MB at once: the reading member keeps up, the other's
    // socket fills and its queue reaches the 1 MiB bound.
    const COUNT: u64 = 5_000;
    let pad = "x".repeat(4096);
    let pubsub = server.services().pubsub.clone();
    let publisher = std::thread::spawn(move || {
        for i in 0..COUNT {
            pubsub.broadcast("echo:flood", "tick", json!({"i": i, "pad": pad}).into());
        }
    });
    for expected in 0..COUNT {
        let tick = fast.recv_json().await;
        assert_eq!(
            tick[4]["i"], expected,
            "the reading member gets every tick, in order"
        );
    }
    publisher.join().unwrap();
    // Only now does the slow client read: what the kernel buffered, then the close.
    let mut read = 0;
    let code = loop {
        match tokio::time::timeout(
            Duration::from_secs(5),
            futures_util::StreamExt::next(&mut slow.ws),
        )
        .await
        {
            Ok(Some(Ok(Message::Close(Some(frame))))) => break u16::from(frame.code),
            Ok(Some(Ok(_))) => read += 1,
            other => panic!("expected a close frame after {read} frames, got {other:?}"),
        }
    };
    assert!(
        read < COUNT,
        "the slow client was cut off, not served everything"
    );
    assert_eq!(code, 1008);
    server.stop();
}

/// A server whose outbound bound is 20 frames, and a client whose join of `echo:held`
/// takes `delay_ms`; `count` broadcasts are published while that join is in progress.
async fn broadcasts_during_a_slow_join(delay_ms: u64, count: u64) -> (RunningServer, Client) {
    let mut config = Config::ephemeral();
    config.max_outbound_frames = 20;
    let server = start_with(config);
    let mut joiner = Client::v2(&server, "joiner").await;
    joiner
        .send(
            json!("1"),
            json!("1"),
            "echo:held",
            "phx_join",
            json!({ "delay_ms": delay_ms }),
        )
        .await;
    // The join subscribes before it waits; until its reply, broadcasts are held.
    let pubsub = server.services().pubsub.clone();
    eventually("the join to subscribe", || {
        pubsub.subscriber_count("echo:held") == 1
    })
    .await;
    for i in 0..count {
        pubsub.broadcast("echo:held", "tick", json!({ "i": i }).into());
    }
    (server, joiner)
}

/// Broadcasts held for a join in progress are bounded like a queue for a client that
/// does not read: past the bound the connection is closed with 1008.
#[tokio::test]
async fn broadcasts_held_for_a_slow_join_are_bounded() {
    let (server, mut joiner) = broadcasts_during_a_slow_join(2000, 21).await;
    assert_eq!(joiner.expect_close().await, 1008);
    server.stop();
}

/// Up to the bound, held broadcasts all follow the join reply, in order.
#[tokio::test]
async fn broadcasts_held_for_a_slow_join_follow_its_reply_up_to_the_bound() {
    let (server, mut joiner) = broadcasts_during_a_slow_join(300, 20).await;
    assert_eq!(
        head(&joiner.recv_json().await, 4),
        json!(["1", "1", "echo:held", "phx_reply"])
    );
    for i in 0..20 {
        assert_eq!(
            joiner.recv_json().await,
            json!([null, null, "echo:held", "tick", { "i": i }])
        );
    }
    server.stop();
}
