//! Re-binding a statement on a shard under the unnamed statement and portal, for statements the
//! proxy runs on several shards (scatter reads, split writes, statements bound everywhere).

use crate::protocol::message::{Bind, Execute, Parse, Target, TargetKind};
use crate::protocol::Frame;
use crate::router::params::Params;
use bytes::{BufMut, Bytes, BytesMut};
use smol_str::SmolStr;

/// Whole messages of a buffer the proxy produced itself.
pub(super) fn split_frames(mut b: Bytes) -> std::collections::VecDeque<Frame> {
    let mut out = std::collections::VecDeque::new();
    while b.len() >= 5 {
        let len = i32::from_be_bytes(b[1..5].try_into().expect("4 bytes")) as usize + 1;
        let tag = b[0];
        out.push_back(Frame {
            tag,
            bytes: b.split_to(len),
        });
    }
    out
}

/// Parse + Bind (+ Describe portal) (+ Execute + Sync) of `sql` on the unnamed statement and
/// portal, for running a scattered read on each shard.
pub(crate) fn rebind(
    sql: &str,
    params: &Params,
    param_types: &[u32],
    result_formats: &[i16],
    describe: bool,
    execute: bool,
) -> Bytes {
    let mut b = BytesMut::new();
    Parse {
        name: String::new(),
        sql: sql.into(),
        param_types: param_types.to_vec(),
    }
    .encode(&mut b);
    Bind {
        portal: SmolStr::default(),
        statement: SmolStr::default(),
        params: params.clone(),
        result_formats: result_formats.into(),
    }
    .encode(&mut b);
    if describe {
        Target {
            kind: TargetKind::Portal,
            name: String::new(),
        }
        .encode(b'D', &mut b);
    }
    if execute {
        Execute {
            portal: String::new(),
            max_rows: 0,
        }
        .encode(&mut b);
        b.put_slice(b"S\0\0\0\x04");
    }
    b.freeze()
}
