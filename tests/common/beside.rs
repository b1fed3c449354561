//! Unlike shards behind the proxy beside one PostgreSQL server holding the same rows, for
//! tests that compare the proxy's answers with what one server answers.

use super::{rows, TestCluster};
use tokio_postgres::Client;

/// Three unlike shards behind the proxy, and one server holding the same rows (a database of
/// the first shard's server, gone with the cluster if a test fails) to compare answers with.
pub struct Beside {
    pub tc: TestCluster,
    /// The proxy.
    pub c: Client,
    pub one: Client,
    name: &'static str,
}

impl Beside {
    /// The cluster with `tables` declared, and `schema` (statements making and filling the
    /// tables) run through the proxy and on the one server alike.
    pub async fn start(name: &'static str, tables: &str, schema: &str) -> Self {
        let tc = TestCluster::start_unlike(3, "", tables).await;
        let c = tc.client().await;
        c.batch_execute(schema).await.unwrap();
        let one = tc.one_server(name, &[schema]).await;
        Beside { tc, c, one, name }
    }

    /// The proxy answers `sql` with the one server's rows, and there are some.
    pub async fn same(&self, sql: &str) {
        let want = rows(&self.one.simple_query(sql).await.unwrap());
        assert!(!want.is_empty(), "{sql}: the one server's answer has rows");
        let got = self
            .c
            .simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}: {:?}", e.as_db_error()));
        assert_eq!(rows(&got), want, "{sql}");
    }

    /// The proxy refuses `sql` as a feature it does not support.
    pub async fn refused(&self, sql: &str) {
        match self.c.simple_query(sql).await {
            Ok(m) => panic!("{sql}: answered {:?} instead of a refusal", rows(&m)),
            Err(e) => assert_eq!(super::code(&e), "0A000", "{sql}: {e}"),
        }
    }

    pub async fn stop(self) {
        self.tc.drop_one_server(self.one, self.name).await;
    }
}
