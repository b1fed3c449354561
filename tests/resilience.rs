//! What happens when things go wrong: cancel, a shard that is down or dies, malformed and
//! hostile input. In every case the affected client gets a clear error or a closed connection,
//! and every other client keeps working.

mod common;

use common::raw::{field, message, query, startup_packet, Raw};
use common::{code, TestCluster};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_shard() {
    let tc = TestCluster::start(1).await;
    let c = tc.client().await;
    let token = c.cancel_token();
    let canceller = tokio::spawn(async move {
        // Give the query time to start; the assertion below does not depend on timing.
        tokio::time::sleep(Duration::from_millis(500)).await;
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    });
    let err = c.simple_query("select pg_sleep(60)").await.unwrap_err();
    assert_eq!(code(&err), "57014", "{err}");
    canceller.await.unwrap();
    assert_eq!(
        c.query_one("select 1", &[]).await.unwrap().get::<_, i32>(0),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_with_a_wrong_key_does_nothing() {
    let tc = TestCluster::start(1).await;
    let c = tc.client().await;
    let mut raw = Raw::connect(tc.port).await;
    let mut packet = 16i32.to_be_bytes().to_vec();
    packet.extend_from_slice(&80877102i32.to_be_bytes());
    packet.extend_from_slice(&1i32.to_be_bytes());
    packet.extend_from_slice(&2i32.to_be_bytes());
    raw.send(&packet).await;
    assert!(raw.is_closed().await);
    let row = c
        .query_one("select pg_sleep(0.2)::text, 1", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(1), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_down_gives_a_connection_error_naming_it_and_recovers() {
    let tc = TestCluster::start(1).await;
    let survivor = tc.client().await;
    tc.shards[0].stop(true).unwrap();
    // The open session loses its shard: its next statement fails, the connection is closed.
    let e = survivor.simple_query("select 1").await.unwrap_err();
    assert!(
        e.is_closed() || code(&e).starts_with("08") || code(&e).starts_with("57P"),
        "{e}"
    );
    // New sessions are refused with a connection-class SQLSTATE naming the shard.
    let e = common::connect(&tc.url("app", "secret"))
        .await
        .map(|_| ())
        .expect_err("refused while the shard is down");
    assert_eq!(code(&e), "08001", "{e}");
    assert!(common::db_error(&e).message().contains("shard s0"), "{e:?}");
    // Once the shard is back, new sessions work without restarting the proxy.
    tc.shards[0].start().unwrap();
    let c = tc.client().await;
    assert_eq!(
        c.query_one("select 2", &[]).await.unwrap().get::<_, i32>(0),
        2
    );
}

/// In session pooling the killed backend is the session's own connection: the next query
/// finds it gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_closing_mid_session_reports_08006() {
    let tc = TestCluster::start_configured(1, "", "[pool]\nmode = \"session\"\n").await;
    let code = kill_own_backend_then_query(&tc).await;
    assert_eq!(code, "08006");
}

/// In transaction pooling the session holds no connection between transactions, so the next
/// query either meets the dead connection (08006) or, when the pool has already seen it close,
/// logs in afresh to a server that is resetting after the crash: refused while it recovers
/// (57P03) or cut off mid-login (08001). Which one is a race with the server's restart; either
/// way the client gets a connection-class error naming the shard, and the session ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_closing_between_transactions_reports_a_connection_error() {
    let tc = TestCluster::start(1).await;
    let code = kill_own_backend_then_query(&tc).await;
    assert!(
        ["08006", "08001", "57P03"].contains(&code.as_str()),
        "{code}"
    );
}

/// Kills the shard backend that served the session's first query, sends another, and returns
/// the SQLSTATE of the error it gets, after checking the error names the shard and the proxy
/// closed the session.
async fn kill_own_backend_then_query(tc: &TestCluster) -> String {
    let (mut raw, _) = Raw::login(tc.port).await;
    raw.send(&query("select pg_backend_pid()")).await;
    let msgs = raw.until_ready().await;
    let pid = msgs
        .iter()
        .find(|(t, _)| *t == b'D')
        .map(|(_, b)| String::from_utf8_lossy(&b[6..]).into_owned())
        .unwrap();
    // Kill the shard backend process without a goodbye, as a crash or network cut would.
    let pid: i32 = pid.parse().unwrap();
    // SAFETY: signalling a process of the test's own shard.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    raw.send(&query("select 1")).await;
    let msgs = raw.until_ready().await;
    let err = msgs.iter().find(|(t, _)| *t == b'E').expect("an error");
    assert!(field(&err.1, b'M').unwrap().contains("shard s0"), "{err:?}");
    assert!(raw.is_closed().await);
    field(&err.1, b'C').unwrap()
}

/// Each bad input ends only its own connection; `witness` runs queries throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_ends_only_the_offending_connection() {
    let tc = TestCluster::start_with(1, "max_message_bytes = 65536").await;
    let witness = tc.client().await;
    let check_witness = || async {
        assert_eq!(
            witness
                .query_one("select 42", &[])
                .await
                .unwrap()
                .get::<_, i32>(0),
            42
        );
    };

    // Wrong protocol version.
    let mut raw = Raw::connect(tc.port).await;
    raw.send(&startup_packet(2 << 16, &[("user", "app")])).await;
    let (tag, body) = raw.recv().await.unwrap();
    assert_eq!((tag, field(&body, b'C').as_deref()), (b'E', Some("08P01")));
    assert!(field(&body, b'M')
        .unwrap()
        .contains("unsupported frontend protocol"));
    assert!(raw.is_closed().await);
    check_witness().await;

    // Absurd startup length.
    let mut raw = Raw::connect(tc.port).await;
    raw.send(&0x7fff_ffffu32.to_be_bytes()).await;
    let (tag, body) = raw.recv().await.unwrap();
    assert_eq!((tag, field(&body, b'C').as_deref()), (b'E', Some("08P01")));
    check_witness().await;

    // No user name.
    let mut raw = Raw::connect(tc.port).await;
    raw.send(&startup_packet(196608, &[("database", "postgres")]))
        .await;
    let (_, body) = raw.recv().await.unwrap();
    assert_eq!(field(&body, b'C').as_deref(), Some("28000"));

    // Unknown message type after login.
    let (mut raw, _) = Raw::login(tc.port).await;
    raw.send(&message(b'y', b"junk")).await;
    let (tag, body) = raw.recv().await.unwrap();
    assert_eq!((tag, field(&body, b'C').as_deref()), (b'E', Some("08P01")));
    assert!(field(&body, b'M')
        .unwrap()
        .contains("invalid frontend message type"));
    assert!(raw.is_closed().await);
    check_witness().await;

    // A length field smaller than itself.
    let (mut raw, _) = Raw::login(tc.port).await;
    raw.send(&[b'Q', 0, 0, 0, 1]).await;
    let (_, body) = raw.recv().await.unwrap();
    assert_eq!(field(&body, b'C').as_deref(), Some("08P01"));
    assert!(raw.is_closed().await);

    // A message over the configured limit.
    let (mut raw, _) = Raw::login(tc.port).await;
    raw.send(&query(&format!("select '{}'", "x".repeat(100_000))))
        .await;
    let (_, body) = raw.recv().await.unwrap();
    assert_eq!(field(&body, b'C').as_deref(), Some("08P01"));
    assert!(field(&body, b'M').unwrap().contains("exceeds the limit"));
    check_witness().await;

    // Garbage in the middle of authentication.
    let mut raw = Raw::connect(tc.port).await;
    raw.send(&startup_packet(196608, &[("user", "app")])).await;
    let (tag, _) = raw.recv().await.unwrap();
    assert_eq!(tag, b'R');
    raw.send(&message(b'p', b"\xff\xfe")).await;
    let (tag, body) = raw.recv().await.unwrap();
    assert_eq!((tag, field(&body, b'C').as_deref()), (b'E', Some("08P01")));
    check_witness().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_and_gss_requests_are_declined_then_login_proceeds() {
    let tc = TestCluster::start(1).await;
    for code in [80877103u32, 80877104] {
        let mut raw = Raw::connect(tc.port).await;
        let mut packet = 8u32.to_be_bytes().to_vec();
        packet.extend_from_slice(&code.to_be_bytes());
        raw.send(&packet).await;
        assert_eq!(raw.recv_byte().await, b'N');
        raw.send(&startup_packet(
            196608,
            &[("user", "trustuser"), ("database", "postgres")],
        ))
        .await;
        let greeting = raw.until_ready().await;
        assert_eq!(greeting.last().map(|(t, b)| (*t, b[0])), Some((b'Z', b'I')));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_protocol_minor_is_negotiated_down() {
    let tc = TestCluster::start(1).await;
    let mut raw = Raw::connect(tc.port).await;
    raw.send(&startup_packet(
        196610,
        &[
            ("user", "trustuser"),
            ("database", "postgres"),
            ("_pq_.test", "1"),
        ],
    ))
    .await;
    let msgs = raw.until_ready().await;
    assert_eq!(msgs[0].0, b'v', "NegotiateProtocolVersion first");
    assert_eq!(msgs.last().map(|(t, b)| (*t, b[0])), Some((b'Z', b'I')));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnecting_mid_query_releases_its_shard_session() {
    let tc = TestCluster::start(1).await;
    let direct = tc.direct(0).await;
    let (mut raw, _) = Raw::login(tc.port).await;
    raw.send(&query("select pg_sleep(30) /* abandoned */"))
        .await;
    let count = || async {
        direct
            .query_one("select count(*) from pg_stat_activity where query like '%abandoned%' and pid <> pg_backend_pid()", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    // Wait until the query is running, then vanish.
    for _ in 0..100 {
        if count().await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count().await, 1);
    drop(raw);
    // PostgreSQL notices the closed socket when pg_sleep checks for interrupts, or the
    // terminate; poll until the backend has gone.
    let mut gone = false;
    for _ in 0..400 {
        if count().await == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the shard session of a vanished client must end");
    let c = tc.client().await;
    assert_eq!(
        c.query_one("select 3", &[]).await.unwrap().get::<_, i32>(0),
        3
    );
}
