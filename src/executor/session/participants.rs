//! The session's links as the transaction code drives them (`txn::participants`).

use super::{Exec, Stop};
use crate::protocol::Frame;
use crate::txn::participants::Participants;
use std::future::Future;

impl Participants for Exec<'_> {
    type Lost = Stop;

    fn name(&self, shard: usize) -> &str {
        &self.links[shard].name
    }

    fn in_transaction(&self, shard: usize) -> bool {
        self.links[shard].in_transaction()
    }

    fn send(
        &mut self,
        shard: usize,
        message: &[u8],
    ) -> impl Future<Output = Result<(), Stop>> + Send {
        let link = &mut self.links[shard];
        async move { link.send(message).await.map_err(Stop::from) }
    }

    fn recv(&mut self, shard: usize) -> impl Future<Output = Result<Frame, Stop>> + Send {
        let link = &mut self.links[shard];
        async move { link.recv().await.map_err(Stop::from) }
    }

    fn to_client(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    fn broken(lost: &Stop) -> Option<&str> {
        match lost {
            Stop::Shard(name) => Some(name),
            _ => None,
        }
    }
}
