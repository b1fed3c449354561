//! A Parse's refusals that do not depend on bound values, and the last text found free of
//! them, kept so that a driver's unnamed statement parsed again for every query is checked
//! once (see `ParseChecked`).

use super::{answered_by_proxy, parse_ast};
use crate::error::PgError;
use crate::executor::session::Exec;

/// The last Parse text that `parse_error` passed, with the placement it was checked against.
/// Drivers send the same unnamed text batch after batch, and checking it again (splitting it
/// into statements, visiting its tree) costs about as much as routing it. The placement is held,
/// not just compared by address, so a reload's new placement can never take an old one's place.
/// Whether the text is one the proxy answers itself (`answered_by_proxy`) is kept with it.
#[derive(Default)]
pub(super) struct ParseChecked(Option<(String, std::sync::Arc<crate::placement::Placement>, bool)>);

impl ParseChecked {
    /// `parse_error` of `sql`, remembered while the text and the placement stay the same.
    pub(super) fn error(&mut self, exec: &Exec<'_>, sql: &str) -> Option<PgError> {
        if let Some((text, placement, _)) = &self.0 {
            if text == sql && std::sync::Arc::ptr_eq(placement, &exec.placement) {
                return None;
            }
        }
        let error = parse_error(exec, sql);
        if error.is_none() {
            let answered = answered_by_proxy(sql);
            self.0 = Some((sql.to_string(), exec.placement.clone(), answered));
        }
        error
    }

    /// `answered_by_proxy` of `sql`, remembered with the last text checked.
    pub(super) fn answered_by_proxy(&self, sql: &str) -> bool {
        match &self.0 {
            Some((text, _, answered)) if text == sql => *answered,
            _ => answered_by_proxy(sql),
        }
    }
}

/// A refusal that does not depend on parameters (see `check_at_parse`).
fn parse_error(exec: &Exec<'_>, sql: &str) -> Option<PgError> {
    if let Some(err) = crate::executor::session::too_large_to_analyse(sql) {
        return Some(err);
    }
    if crate::sql::split_statements(sql).len() > 1 {
        return Some(PgError::error(
            "42601",
            "cannot insert multiple commands into a prepared statement",
        ));
    }
    parse_ast(exec, sql)
        .and_then(|stmt| crate::router::plan::check_at_parse(&stmt, &exec.placement))
}
