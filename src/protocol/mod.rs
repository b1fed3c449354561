//! The PostgreSQL v3 wire protocol as the proxy needs it.
//!
//! `frame` cuts byte streams into messages without decoding them (the data plane forwards bytes);
//! `startup` reads the untyped packets that open a connection; `build` encodes the few messages
//! the proxy originates (through pgwire's codecs); `inspect` reads single fields out of frames
//! the proxy must look into; `embedded_oids` renumbers the types binary values name inside
//! them. The codec never decides anything: policy lives in `frontend`.

pub mod build;
pub mod embedded_oids;
pub mod frame;
pub mod inspect;
pub mod message;
pub mod startup;

pub use frame::{Frame, FrameError, FrameScanner};
