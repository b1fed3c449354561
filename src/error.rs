//! Errors the proxy itself reports to clients, as PostgreSQL ErrorResponse/NoticeResponse fields.
//!
//! Every error a client can cause or observe is a `PgError` value with a real SQLSTATE, so drivers
//! can branch on codes exactly as they would against PostgreSQL. Errors from shards are not turned
//! into `PgError`: they are forwarded as the bytes the shard sent, with every field intact.

/// SQLSTATE codes the proxy produces.
pub mod sqlstate {
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    pub const CONNECTION_FAILURE: &str = "08006";
    pub const CONNECTION_UNABLE: &str = "08001";
    pub const INVALID_PASSWORD: &str = "28P01";
    pub const INVALID_AUTHORIZATION: &str = "28000";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    pub const QUERY_CANCELED: &str = "57014";
    pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
    pub const INTERNAL_ERROR: &str = "XX000";
    pub const OBJECT_NOT_IN_PREREQUISITE_STATE: &str = "55000";
}

/// Severity of a proxy-generated message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Ends the statement; the session continues.
    Error,
    /// Ends the session; the proxy closes the connection after sending it.
    Fatal,
}

/// An error the proxy reports to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    pub severity: Severity,
    pub code: &'static str,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    /// The PostgreSQL routine that raises this error, for errors the proxy raises in
    /// PostgreSQL's place that drivers recognise by it (the `R` field).
    pub routine: Option<&'static str>,
}

impl PgError {
    /// PostgreSQL's refusal of a prepared statement whose result columns changed since it was
    /// prepared. Drivers tell it from other 0A000s by its routine name (asyncpg then prepares
    /// the statement again).
    pub fn changed_result_type() -> PgError {
        PgError::error(
            sqlstate::FEATURE_NOT_SUPPORTED,
            "cached plan must not change result type",
        )
        .with_hint(
            "The statement's result columns changed since it was prepared; prepare it again.",
        )
        .with_routine("RevalidateCachedQuery")
    }

    pub fn error(code: &'static str, message: impl Into<String>) -> PgError {
        PgError {
            severity: Severity::Error,
            code,
            message: message.into(),
            detail: None,
            hint: None,
            routine: None,
        }
    }

    pub fn fatal(code: &'static str, message: impl Into<String>) -> PgError {
        PgError {
            severity: Severity::Fatal,
            ..PgError::error(code, message)
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> PgError {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> PgError {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_routine(mut self, routine: &'static str) -> PgError {
        self.routine = Some(routine);
        self
    }

    /// The ErrorResponse field list (S, V, C, M, D, H, R).
    pub fn fields(&self) -> Vec<(u8, String)> {
        let severity = match self.severity {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        };
        let mut fields = vec![
            (b'S', severity.to_string()),
            (b'V', severity.to_string()),
            (b'C', self.code.to_string()),
            (b'M', self.message.clone()),
        ];
        if let Some(d) = &self.detail {
            fields.push((b'D', d.clone()));
        }
        if let Some(h) = &self.hint {
            fields.push((b'H', h.clone()));
        }
        if let Some(r) = self.routine {
            fields.push((b'R', r.to_string()));
        }
        fields
    }
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for PgError {}
