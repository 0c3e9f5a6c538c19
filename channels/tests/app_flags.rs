//! The binary's own flags for the default application reach it: `--max-rooms` and
//! `--room-idle-timeout-ms`, in `--help` and in effect.

mod support;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;

use support::{fluxwire, Server, TIMEOUT};

#[tokio::test]
async fn help_lists_the_application_flags_with_their_env_and_defaults() {
    let output = Command::new(env!("CARGO_BIN_EXE_fluxwire"))
        .arg("--help")
        .output()
        .await
        .expect("the fluxwire binary runs");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "--port <PORT>",
        "--max-rooms <MAX_ROOMS>",
        "[env: FLUXWIRE_MAX_ROOMS=] [default: 1000]",
        "--room-idle-timeout-ms <ROOM_IDLE_TIMEOUT_MS>",
        "[env: FLUXWIRE_ROOM_IDLE_TIMEOUT_MS=] [default: 300000]",
    ] {
        assert!(help.contains(expected), "{expected:?} not in:\n{help}");
    }
    let refused = Command::new(env!("CARGO_BIN_EXE_fluxwire"))
        .args(["--max-rooms", "0"])
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("expected a whole number of 1 or more"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn max_rooms_set_on_the_command_line_refuses_one_room_more() {
    let mut command = fluxwire();
    command.args(["--max-rooms", "1"]);
    let server = Server::start(command).await;
    let addr = server.addr.clone();

    let url = format!("ws://{addr}/socket/websocket?user=one&vsn=2.0.0");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut join = async |topic: &str, join_ref: &str| -> Value {
        let frame = json!([join_ref, join_ref, topic, "phx_join", {}]).to_string();
        ws.send(Message::Text(frame.into())).await.unwrap();
        loop {
            let message = tokio::time::timeout(TIMEOUT, ws.next())
                .await
                .expect("a reply")
                .unwrap()
                .unwrap();
            let message: Value = serde_json::from_str(message.to_text().unwrap()).unwrap();
            if message[3] == "phx_reply" && message[1] == join_ref {
                return message[4].clone();
            }
        }
    };
    assert_eq!(
        join("room:first", "1").await,
        json!({"status": "ok", "response": {"messages": []}})
    );
    assert_eq!(
        join("room:second", "2").await,
        json!({"status": "error", "response": {"reason": "too many rooms"}})
    );
    let log = server.stop().await;
    assert!(
        log.iter()
            .any(|line| line.contains("rooms: 1 live, the most --max-rooms allows")),
        "the cap is logged once: {log:#?}"
    );
}
