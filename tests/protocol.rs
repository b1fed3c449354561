//! The wire protocol through a one-shard proxy, with tokio-postgres as the client: simple and
//! extended query, pipelining, binary formats, portal suspension, COPY, errors and notices with
//! every field, and transaction status.

mod common;

use common::{code, db_error, TestCluster};
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use tokio_postgres::types::Type;
use tokio_postgres::{AsyncMessage, NoTls, SimpleQueryMessage};

fn simple_values(msgs: &[SimpleQueryMessage]) -> Vec<String> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("NULL").to_string()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_query_with_several_statements() {
    let tc = TestCluster::start(1).await;
    let c = tc.client().await;
    let msgs = c
        .simple_query("create table t(x int); insert into t values (1),(2); select x from t order by x; select 'three'")
        .await
        .unwrap();
    assert_eq!(simple_values(&msgs), vec!["1", "2", "three"]);
    let tags: Vec<u64> = msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect();
    assert_eq!(tags, vec![0, 2, 2, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_query_named_statements_binary_params_and_results() {
    let tc = TestCluster::start(1).await;
    let c = tc.client().await;
    let stmt = c
        .prepare_typed(
            "select $1::int8 * 2, $2::text || '!', $3::bytea",
            &[Type::INT8, Type::TEXT, Type::BYTEA],
        )
        .await
        .unwrap();
    for i in 0..3i64 {
        let row = c
            .query_one(&stmt, &[&i, &"hi", &vec![0u8, 255, 7]])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), i * 2);
        assert_eq!(row.get::<_, String>(1), "hi!");
        assert_eq!(row.get::<_, Vec<u8>>(2), vec![0u8, 255, 7]);
    }
    // Unnamed statement path.
    let row = c
        .query_one("select $1::float8 + 0.5", &[&1.0f64])
        .await
        .unwrap();
    assert_eq!(row.get::<_, f64>(0), 1.5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_queries_all_answer_in_order() {
    let tc = TestCluster::start(1).await;
    let c = tc.client().await;
    let stmt = c.prepare("select $1::int4 + 100").await.unwrap();
    // tokio-postgres sends every request before reading any response when futures are joined.
    let params: Vec<i32> = (0..50).collect();
    let refs: Vec<[&(dyn tokio_postgres::types::ToSql + Sync); 1]> =
        params.iter().map(|i| [i as _]).collect();
    let futures: Vec<_> = refs.iter().map(|p| c.query_one(&stmt, p)).collect();
    let rows = futures_util::future::join_all(futures).await;
    for (i, r) in rows.into_iter().enumerate() {
        assert_eq!(r.unwrap().get::<_, i32>(0), i as i32 + 100);
    }
}

/// Large requests and large answers at once: tokio-postgres writes the pipeline while it reads
/// answers, so the relay must keep both directions moving (it reads a side only while what it
/// owes the other is bounded) and never stall one behind the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_pipelined_requests_and_answers_flow_both_ways_at_once() {
    let tc = TestCluster::start(1).await;
    let c = tc.client().await;
    let stmt = c.prepare("select $1::text || $1::text").await.unwrap();
    let texts: Vec<String> = (0..40)
        .map(|i| format!("{i:04}").repeat(64 * 1024))
        .collect();
    let params: Vec<[&(dyn tokio_postgres::types::ToSql + Sync); 1]> =
        texts.iter().map(|t| [t as _]).collect();
    let futures: Vec<_> = params.iter().map(|p| c.query_one(&stmt, p)).collect();
    let rows = futures_util::future::join_all(futures).await;
    for (t, r) in texts.iter().zip(rows) {
        let doubled: String = r.unwrap().get(0);
        assert_eq!(doubled.len(), 2 * t.len());
        assert!(doubled.starts_with(&t[..4]) && doubled.ends_with(&t[..4]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_with_row_limit_suspends_the_portal() {
    let tc = TestCluster::start(1).await;
    let mut c = tc.client().await;
    let tx = c.transaction().await.unwrap();
    let stmt = tx
        .prepare("select g from generate_series(1, 5) g")
        .await
        .unwrap();
    let portal = tx.bind(&stmt, &[]).await.unwrap();
    let mut sizes = Vec::new();
    let mut all = Vec::new();
    loop {
        let rows = tx.query_portal(&portal, 2).await.unwrap();
        if rows.is_empty() {
            break;
        }
        sizes.push(rows.len());
        all.extend(rows.iter().map(|r| r.get::<_, i32>(0)));
    }
    assert_eq!(sizes, vec![2, 2, 1]);
    assert_eq!(all, vec![1, 2, 3, 4, 5]);
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_copy_out() {
    let tc = TestCluster::start(1).await;
    let c = tc.client().await;
    c.batch_execute("create table c(id int, v text)")
        .await
        .unwrap();
    let sink = c.copy_in("copy c from stdin").await.unwrap();
    futures_util::pin_mut!(sink);
    let mut data = String::new();
    for i in 0..10_000 {
        data.push_str(&format!("{i}\tvalue {i}\n"));
    }
    sink.send(bytes::Bytes::from(data)).await.unwrap();
    let n = sink.finish().await.unwrap();
    assert_eq!(n, 10_000);
    let out = c
        .copy_out("copy (select * from c order by id) to stdout")
        .await
        .unwrap();
    let chunks: Vec<bytes::Bytes> = out.try_collect().await.unwrap();
    let text: String = chunks
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert_eq!(text.lines().count(), 10_000);
    assert_eq!(text.lines().last(), Some("9999\tvalue 9999"));
    // A COPY the server rejects part-way leaves the session usable.
    let sink = c.copy_in("copy c from stdin").await.unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(
        b"1	ok
not-a-number	bad
",
    ))
    .await
    .unwrap();
    let err = sink.finish().await.unwrap_err();
    assert_eq!(code(&err), "22P02");
    let row = c.query_one("select count(*) from c", &[]).await.unwrap();
    assert_eq!(row.get::<_, i64>(0), 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_keep_every_field() {
    let tc = TestCluster::start(1).await;
    let c = tc.client().await;
    let e = c.simple_query("select 1/0").await.unwrap_err();
    assert_eq!(code(&e), "22012");
    let e = c
        .simple_query("select nosuchcolumn from pg_class")
        .await
        .unwrap_err();
    let db = db_error(&e);
    assert_eq!(db.code().code(), "42703");
    assert!(
        matches!(
            db.position(),
            Some(tokio_postgres::error::ErrorPosition::Original(8))
        ),
        "{:?}",
        db.position()
    );
    let e = c
        .batch_execute("do $$ begin raise exception 'custom' using errcode = 'P0042', detail = 'the detail', hint = 'the hint'; end $$")
        .await
        .unwrap_err();
    let db = db_error(&e);
    assert_eq!((db.code().code(), db.message()), ("P0042", "custom"));
    assert_eq!(db.detail(), Some("the detail"));
    assert_eq!(db.hint(), Some("the hint"));
    assert!(db.where_().is_some(), "context field is forwarded");
    // The session is fine afterwards.
    assert_eq!(
        c.query_one("select 1", &[]).await.unwrap().get::<_, i32>(0),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_reach_the_client() {
    let tc = TestCluster::start(1).await;
    let (client, mut conn) = tokio_postgres::connect(&tc.url("app", "secret"), NoTls)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(msg)) = stream.next().await {
            if let AsyncMessage::Notice(n) = msg {
                let _ = tx.send(n);
            }
        }
    });
    client
        .batch_execute("do $$ begin raise notice 'hello %', 42 using hint = 'notice hint'; end $$")
        .await
        .unwrap();
    let notice = rx.recv().await.expect("a notice");
    assert_eq!(notice.message(), "hello 42");
    assert_eq!(notice.hint(), Some("notice hint"));
    assert_eq!(notice.code().code(), "00000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_status_follows_postgres() {
    let tc = TestCluster::start(1).await;
    let (mut raw, _) = common::raw::Raw::login(tc.port).await;
    let status = |msgs: &[(u8, Vec<u8>)]| msgs.last().map(|(t, b)| (*t, b[0]));
    raw.send(&common::raw::query("begin")).await;
    assert_eq!(status(&raw.until_ready().await), Some((b'Z', b'T')));
    raw.send(&common::raw::query("select 1/0")).await;
    assert_eq!(status(&raw.until_ready().await), Some((b'Z', b'E')));
    raw.send(&common::raw::query("select 1")).await;
    let msgs = raw.until_ready().await;
    let err = msgs
        .iter()
        .find(|(t, _)| *t == b'E')
        .expect("error in failed transaction");
    assert_eq!(common::raw::field(&err.1, b'C').as_deref(), Some("25P02"));
    raw.send(&common::raw::query("rollback")).await;
    assert_eq!(status(&raw.until_ready().await), Some((b'Z', b'I')));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greeting_forwards_the_shards_parameters() {
    let tc = TestCluster::start(1).await;
    let (_raw, greeting) = common::raw::Raw::login(tc.port).await;
    let params: Vec<(String, String)> = greeting
        .iter()
        .filter(|(t, _)| *t == b'S')
        .map(|(_, b)| {
            let parts: Vec<&[u8]> = b.split(|&x| x == 0).collect();
            (
                String::from_utf8_lossy(parts[0]).into_owned(),
                String::from_utf8_lossy(parts[1]).into_owned(),
            )
        })
        .collect();
    let version = params
        .iter()
        .find(|(k, _)| k == "server_version")
        .map(|(_, v)| v.clone());
    let direct: String = tc
        .direct(0)
        .await
        .query_one("show server_version", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, Some(direct));
    assert!(params
        .iter()
        .any(|(k, v)| k == "client_encoding" && v == "UTF8"));
    assert!(
        greeting.iter().any(|(t, _)| *t == b'K'),
        "BackendKeyData sent"
    );
    assert_eq!(greeting.last().map(|(t, b)| (*t, b[0])), Some((b'Z', b'I')));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters_reach_the_shard() {
    let tc = TestCluster::start(1).await;
    let url = format!(
        "{}?application_name=myapp&options=-c%20search_path%3Dfoo",
        tc.url("app", "secret")
    );
    let c = common::connect(&url).await.unwrap();
    let row = c
        .query_one(
            "select current_setting('application_name'), current_setting('search_path')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0).as_str(),
            row.get::<_, String>(1).as_str()
        ),
        ("myapp", "foo")
    );
}

/// A list of schemas given at login is a list on every shard, as PostgreSQL reads it, not one
/// schema named `foo, public`; a RESET gives it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_path_given_at_login_is_a_list_on_every_shard() {
    let tables = "[tables.items]\nshard_key = \"id\"\nkey_type = \"bigint\"\n";
    let tc = TestCluster::start_configured(3, "", tables).await;
    tc.client()
        .await
        .batch_execute("create table items (id bigint primary key); insert into items select generate_series(1, 30)")
        .await
        .unwrap();
    let url = format!(
        "{}?options=-c%20search_path%3DFoo%2C%22MySchema%22%2Cpublic",
        tc.url("app", "secret")
    );
    let c = common::connect(&url).await.unwrap();
    for _ in 0..2 {
        let path: String = c
            .query_one("select current_setting('search_path')", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(path, "foo, \"MySchema\", public");
        // Every shard finds the table in public.
        let n: i64 = c
            .query_one("select count(*) from items", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 30);
        c.batch_execute("reset search_path").await.unwrap();
    }
}
