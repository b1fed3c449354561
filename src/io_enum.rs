//! `AsyncRead` and `AsyncWrite` for enums whose every variant wraps a stream (plaintext or TLS,
//! TCP or Unix): each call goes to the variant's stream.

/// A non-blocking write's outcome with "the socket takes nothing now" as `Ok(0)`, for callers
/// that then wait for writability the usual way.
pub fn taken_now(written: std::io::Result<usize>) -> std::io::Result<usize> {
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(0),
        other => other,
    }
}

/// `delegate_read!(Type: Variant, ...)`
macro_rules! delegate_read {
    ($t:ty: $($v:ident),+) => {
        impl tokio::io::AsyncRead for $t {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                match self.get_mut() {
                    $(Self::$v(s) => std::pin::Pin::new(s).poll_read(cx, buf),)+
                }
            }
        }
    };
}

/// `delegate_write!(Type: Variant, ...)`
macro_rules! delegate_write {
    ($t:ty: $($v:ident),+) => {
        impl tokio::io::AsyncWrite for $t {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                match self.get_mut() {
                    $(Self::$v(s) => std::pin::Pin::new(s).poll_write(cx, buf),)+
                }
            }
            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                match self.get_mut() {
                    $(Self::$v(s) => std::pin::Pin::new(s).poll_flush(cx),)+
                }
            }
            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                match self.get_mut() {
                    $(Self::$v(s) => std::pin::Pin::new(s).poll_shutdown(cx),)+
                }
            }
        }
    };
}

pub(crate) use delegate_read;
pub(crate) use delegate_write;
