//! One shard connection driven request/response: send bytes, receive whole messages.

use crate::backend::ShardStream;
use crate::protocol::Frame;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The shard went away or broke framing; the session cannot go on without it.
#[derive(Debug, thiserror::Error)]
#[error("lost connection to shard {shard}")]
pub struct LinkLost {
    pub shard: String,
}

pub struct ShardLink {
    pub index: usize,
    pub name: String,
    stream: ShardStream,
    buf: BytesMut,
}

impl ShardLink {
    pub fn new(index: usize, name: String, stream: ShardStream) -> ShardLink {
        ShardLink {
            index,
            name,
            stream,
            buf: BytesMut::with_capacity(16 * 1024),
        }
    }

    fn lost(&self) -> LinkLost {
        LinkLost {
            shard: self.name.clone(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), LinkLost> {
        self.stream.write_all(bytes).await.map_err(|_| self.lost())
    }

    /// The next whole message from the shard.
    pub async fn recv(&mut self) -> Result<Frame, LinkLost> {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes(self.buf[1..5].try_into().expect("4 bytes"));
                if len < 4 {
                    return Err(self.lost());
                }
                let total = len as usize + 1;
                if self.buf.len() >= total {
                    let tag = self.buf[0];
                    return Ok(crate::protocol::frame::take_frame(
                        &mut self.buf,
                        tag,
                        total,
                    ));
                }
                self.buf.reserve(total - self.buf.len());
            } else {
                self.buf.reserve(16 * 1024);
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return Err(self.lost()),
                Ok(_) => {}
            }
        }
    }
}
