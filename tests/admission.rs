//! Who gets in, under attack: floods of half-open connections, more clients than allowed,
//! clients that never finish logging in, and password guessing that must not reveal which user
//! names exist.

mod common;

use common::raw::{field, startup_packet, Raw};
use common::TestCluster;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The authentication request a fresh login as `user` gets: its code and body.
async fn challenge(port: u16, user: &str) -> (i32, Vec<u8>) {
    let mut raw = Raw::connect(port).await;
    raw.send(&startup_packet(
        196608,
        &[("user", user), ("database", "postgres")],
    ))
    .await;
    let (tag, body) = raw.recv().await.expect("an authentication request");
    assert_eq!(tag, b'R', "{user}");
    let code = i32::from_be_bytes(body[..4].try_into().unwrap());
    (code, body)
}

/// The salt of a SCRAM server-first message for `user`.
async fn scram_salt(port: u16, user: &str) -> String {
    let mut raw = Raw::connect(port).await;
    raw.send(&startup_packet(
        196608,
        &[("user", user), ("database", "postgres")],
    ))
    .await;
    let (_, body) = raw.recv().await.unwrap();
    assert_eq!(
        i32::from_be_bytes(body[..4].try_into().unwrap()),
        10,
        "SASL"
    );
    let first = b"n,,n=,r=abcdefghijklmnop";
    let mut msg = b"SCRAM-SHA-256\0".to_vec();
    msg.extend_from_slice(&(first.len() as i32).to_be_bytes());
    msg.extend_from_slice(first);
    raw.send(&common::raw::message(b'p', &msg)).await;
    let (tag, body) = raw.recv().await.unwrap();
    assert_eq!(tag, b'R');
    let text = String::from_utf8(body[4..].to_vec()).unwrap();
    text.split(',')
        .find_map(|kv| kv.strip_prefix("s="))
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_users_cannot_be_told_from_real_ones() {
    let tc = TestCluster::start(2).await;
    // The test users are mostly SCRAM: unknown names get SCRAM too.
    assert_eq!(challenge(tc.port, "nobody").await.0, 10);
    // A real user's salt is the same at every attempt, and so is an unknown user's.
    assert_eq!(
        scram_salt(tc.port, "app").await,
        scram_salt(tc.port, "app").await
    );
    let unknown = scram_salt(tc.port, "nobody").await;
    assert_eq!(unknown, scram_salt(tc.port, "nobody").await);
    assert_ne!(unknown, scram_salt(tc.port, "someone-else").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_most_users_use_md5_unknown_users_get_md5() {
    let tc = TestCluster::start_configured(
        1,
        "",
        "[[users]]\nname = \"m2\"\npassword = \"x\"\nauth = \"md5\"\n[[users]]\nname = \"m3\"\npassword = \"x\"\nauth = \"md5\"\n",
    )
    .await;
    assert_eq!(challenge(tc.port, "m2").await.0, 5);
    assert_eq!(challenge(tc.port, "nobody").await.0, 5);
    let e = common::connect(&tc.url("nobody", "x")).await.err().unwrap();
    assert_eq!(common::code(&e), "28P01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_get_in_during_a_flood_of_half_open_connections() {
    let tc = TestCluster::start_with(
        3,
        "max_pending_startups = 16\nmax_client_connections = 2000",
    )
    .await;
    // 600 connections that say nothing, and 200 that send half a startup packet.
    let mut flood = Vec::new();
    for i in 0..800 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", tc.port))
            .await
            .unwrap();
        if i % 4 == 0 {
            let _ = s.write_all(&[0, 0, 0, 40, 0, 3]).await;
        }
        flood.push(s);
    }
    for _ in 0..5 {
        let c = tc.client().await;
        let n: i32 = c.query_one("select 1", &[]).await.unwrap().get(0);
        assert_eq!(n, 1);
    }
    drop(flood);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_over_the_limit_gets_53300() {
    let tc = TestCluster::start_with(2, "max_client_connections = 3").await;
    let a = tc.client().await;
    let _b = tc.client().await;
    let _c = tc.client().await;
    let e = common::connect(&tc.url("app", "secret"))
        .await
        .err()
        .unwrap();
    assert_eq!(common::code(&e), "53300");
    drop(a);
    // A slot is free again once a client leaves.
    assert!(
        tc.client_eventually(Duration::from_secs(5)).await.is_some(),
        "the freed slot is reused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_logs_in_is_closed() {
    let tc = TestCluster::start_with(2, "startup_timeout_secs = 1").await;
    let mut raw = Raw::connect(tc.port).await;
    // Half a startup packet, then silence.
    raw.send(&[0, 0, 0, 40]).await;
    let (tag, body) = raw.recv().await.expect("told why before the close");
    assert_eq!(tag, b'E');
    assert_eq!(field(&body, b'C').as_deref(), Some("08P01"));
    assert!(raw.is_closed().await);
}
