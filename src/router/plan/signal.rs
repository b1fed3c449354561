//! `SELECT pg_cancel_backend(pid)` and `SELECT pg_terminate_backend(pid)` of a pid the proxy
//! minted: the proxy's own sessions, which no shard knows, so the proxy answers (see
//! `client::cancel`). The statement is recognised as the one-shard relay recognises it
//! (`sql::signal_call`), from its text as sqlparser writes it back; a pid a parameter gives is
//! read from the bound values, so such a plan is never learned for later values.

use super::{Plan, Query};
use crate::client::cancel::is_minted;
use crate::router::params::Params;
use crate::sql::signal_call::{self, Arg, SignalKind};

/// The plan of such a call, if `q` is one of a minted pid.
pub(super) fn signal_plan(q: &Query, params: &Params) -> Option<Plan> {
    // Only a SELECT without FROM of one such function is written back as text and read.
    let f = super::lone_call(q)?;
    SignalKind::of_function(&f.name.to_string())?;
    let call = signal_call::parse(&q.to_string())?;
    let pid = match call.arg {
        Arg::Pid(pid) => pid,
        Arg::Param(n) => params.constant(n)?.parse().ok()?,
    };
    is_minted(pid).then_some(Plan::Signal {
        kind: call.kind,
        pid: pid as i32,
        column: call.column,
    })
}
