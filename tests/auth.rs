//! Client authentication at the proxy (SCRAM-SHA-256, md5, trust) and the proxy's own login to
//! shards that demand SCRAM or md5.

mod common;

use common::{code, connect, TestCluster};
use shardgate::config::Config;
use shardgate::server::Proxy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_md5_and_trust_users_log_in() {
    let tc = TestCluster::start(1).await;
    for (user, pw) in [
        ("app", "secret"),
        ("md5user", "md5secret"),
        ("trustuser", ""),
    ] {
        let c = connect(&tc.url(user, pw))
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}"));
        assert_eq!(
            c.query_one("select 1", &[]).await.unwrap().get::<_, i32>(0),
            1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_user_get_28p01() {
    let tc = TestCluster::start(1).await;
    for (user, pw) in [("app", "wrong"), ("md5user", "wrong"), ("nobody", "secret")] {
        let e = connect(&tc.url(user, pw))
            .await
            .err()
            .unwrap_or_else(|| panic!("{user} must be refused"));
        assert_eq!(code(&e), "28P01", "{user}");
        assert_eq!(
            common::db_error(&e).message(),
            format!("password authentication failed for user \"{user}\"")
        );
    }
}

/// Puts a password on the shard's superuser and makes the shard demand `method` over TCP.
async fn require_password(tc: &TestCluster, method: &str) {
    let direct = tc.direct(0).await;
    direct
        .batch_execute(&format!(
            "set password_encryption = '{}'; alter user postgres password 'shardpw'",
            if method == "md5" {
                "md5"
            } else {
                "scram-sha-256"
            }
        ))
        .await
        .unwrap();
    let hba = format!("local all all trust\nhost all all 127.0.0.1/32 {method}\n");
    std::fs::write(tc.shards[0].data_dir.join("pg_hba.conf"), hba).unwrap();
    direct
        .batch_execute("select pg_reload_conf()")
        .await
        .unwrap();
}

async fn proxy_with_shard_password(tc: &TestCluster, password: &str) -> Result<Proxy, String> {
    let port = shardgate::localpg::free_port().unwrap();
    let text = common::config_for(port, &tc.shards, "").replace(
        "postgres://postgres@",
        &format!("postgres://postgres:{password}@"),
    );
    Proxy::start(&Config::from_toml(&text).unwrap())
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_logs_in_to_scram_and_md5_shards() {
    for method in ["scram-sha-256", "md5"] {
        let tc = TestCluster::start(1).await;
        require_password(&tc, method).await;
        let proxy = proxy_with_shard_password(&tc, "shardpw")
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}"));
        let c = connect(&format!(
            "postgres://app:secret@127.0.0.1:{}/postgres",
            proxy.local_addr.port()
        ))
        .await
        .unwrap();
        assert_eq!(
            c.query_one("select 7", &[]).await.unwrap().get::<_, i32>(0),
            7,
            "{method}"
        );
        let err = proxy_with_shard_password(&tc, "wrongpw")
            .await
            .map(|_| ())
            .expect_err("wrong shard password refused at start");
        assert!(
            err.contains("shard s0") && !err.contains("wrongpw"),
            "{err}"
        );
        proxy.shutdown().await;
    }
}
