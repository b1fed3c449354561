//! Reading the client's messages in a multi-shard session and dispatching them.

use super::extended::Extended;
use super::link::ShardLink;
use super::session::{Exec, Stop};
use crate::error::{sqlstate, PgError};
use crate::frontend::SessionEnd;
use crate::protocol::frame::{take_frame, FrameScanner, Scan};
use crate::protocol::{build, inspect, Frame};
use crate::server::ProxyContext;
use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::watch;

pub async fn run(
    ctx: &ProxyContext,
    socket: TcpStream,
    links: Vec<ShardLink>,
    mut shutdown: watch::Receiver<bool>,
) -> SessionEnd {
    let (mut rx, tx) = socket.into_split();
    let mut exec = Exec::new(&ctx.placement, &ctx.txn, links, tx, ctx.text_order_c);
    let mut extended = Extended::default();
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut scanner = FrameScanner::new(ctx.max_message_bytes);
    let end = loop {
        let frame = tokio::select! {
            f = read_frame(&mut rx, &mut buf, &mut scanner) => f,
            _ = crate::server::stopped(&mut shutdown) => break SessionEnd::Shutdown,
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => break SessionEnd::ClientGone,
            Err(msg) => break SessionEnd::ProtocolViolation(msg),
        };
        let result = match frame.tag {
            b'Q' => match inspect::query_text(frame.body()) {
                Some(text) => exec.simple_query(text).await,
                None => break SessionEnd::ProtocolViolation("invalid string in message".into()),
            },
            b'X' => break SessionEnd::Terminated,
            b'P' | b'B' | b'D' | b'E' | b'C' | b'H' | b'S' => {
                extended.handle(&mut exec, frame).await
            }
            b'F' => {
                exec.error(&PgError::error(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "the function-call protocol is not supported on several shards",
                ));
                build::ready_for_query(exec.txn.status(), &mut exec.out);
                exec.flush().await
            }
            // Stray COPY messages outside COPY are ignored, as PostgreSQL does.
            b'd' | b'c' | b'f' => Ok(()),
            other => {
                break SessionEnd::ProtocolViolation(format!(
                    "invalid frontend message type {other}"
                ))
            }
        };
        match result {
            Ok(()) => {}
            Err(Stop::Client) => break SessionEnd::ClientGone,
            Err(Stop::Shard(name)) => break SessionEnd::ShardGone(name),
        }
    };
    let last_words = end.last_words();
    // Open shard transactions end when the links are dropped: PostgreSQL rolls back on close.
    let mut client = exec.into_client();
    if let Some(err) = last_words {
        crate::frontend::send_fatal(&mut client, &err).await;
    }
    end
}

async fn read_frame(
    rx: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    scanner: &mut FrameScanner,
) -> Result<Option<Frame>, String> {
    loop {
        match scanner.scan(buf, 0, |_| true).map_err(|e| e.to_string())? {
            Scan::Whole { tag, len } => return Ok(Some(take_frame(buf, tag, len))),
            Scan::Pass { .. } => unreachable!("every frame is inspected"),
            Scan::NeedMore => {}
        }
        buf.reserve(8 * 1024);
        match rx.read_buf(buf).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}
