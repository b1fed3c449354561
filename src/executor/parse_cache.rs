//! Parsed statements, by text and by shape, shared by the sessions of one worker thread.
//!
//! Parsing costs tens of microseconds and clients repeat themselves, so what was parsed is kept.
//! A syntax tree depends on nothing but its text (what a session adds, such as an INSERT's
//! columns, is added to a copy), so the sessions of a worker thread share one cache: the clients
//! of one application send the same texts, and a cache per session held each tree once per
//! client. Texts without literals (prepared statements with `$n`) are kept by their exact text.
//! Texts with literals are kept once per shape (`sql::shape`): `... id = 5` and `... id = 6`
//! share one template, filled with each text's own literals, so a client that inlines values
//! does not fill the cache with one entry per value. A shape is kept only after its template has
//! reproduced a real parse exactly.
//!
//! The cache is bounded by an estimate of the bytes it holds (the text plus its syntax tree,
//! which takes tens of times the text's size); when full it starts over. Texts over 8 KiB are
//! not kept: they are usually long literal lists, parsed once. A lookup never waits: the cache
//! is the thread's own, and borrowed only for the lookup.

use crate::sql::{shape_of, Shape};
use sqlparser::ast::Statement;
use sqlparser::dialect::PostgreSqlDialect;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// The statements of one text, shared with the cache.
pub type Parsed = Arc<Vec<Arc<Statement>>>;

const BUDGET_BYTES: usize = 16 << 20;
const LARGEST_TEXT: usize = 8 << 10;

enum Entry {
    /// An exact text and its statements (`None`: sqlparser could not parse it).
    Text(Option<Parsed>),
    /// A proven template for texts of this shape.
    Template(Arc<Vec<Statement>>),
    /// This shape's template does not reproduce its texts: parse them one by one.
    Unshaped,
}

#[derive(Default)]
pub struct ParseCache {
    entries: HashMap<String, Entry>,
    bytes: usize,
    /// The last few texts served, by exact text: one statement is looked up several times while
    /// it is routed and planned, and comparing a few texts costs less than hashing one (a shape
    /// hit would also re-tokenize and re-fill).
    recent: VecDeque<(String, Option<Parsed>)>,
}

/// Texts kept in `recent`.
const RECENT: usize = 8;

thread_local! {
    static SHARED: std::cell::RefCell<ParseCache> = std::cell::RefCell::new(ParseCache::default());
}

/// `ParseCache::get_shaped` on this thread's cache.
pub fn get_shared(sql: &str, shape: Option<Shape>) -> Option<Parsed> {
    // The cache is gone only while the thread ends; a lookup then parses without it.
    SHARED
        .try_with(|c| c.borrow_mut().get_shaped(sql, shape))
        .unwrap_or_else(|_| parse(sql).map(shared))
}

/// `ParseCache::template` on this thread's cache.
pub fn shared_template(shape_key: &str) -> Option<Arc<Vec<Statement>>> {
    SHARED
        .try_with(|c| c.borrow().template(shape_key))
        .ok()
        .flatten()
}

/// Estimated memory of one entry.
fn weight(key: &str) -> usize {
    key.len() * 64 + 1024
}

fn parse(sql: &str) -> Option<Vec<Statement>> {
    let parsed = |text: &str| {
        sqlparser::parser::Parser::parse_sql(&PostgreSqlDialect {}, text)
            .ok()
            .filter(|v| !v.is_empty())
            // A string taken as an alias was a typed constant, or a syntax error.
            .and_then(|v| crate::sql::typed_constants_from_aliases(text, v))
    };
    // sqlparser reads `0x1f` as a bit string and `1_000` as a number under an alias, and
    // splits the operator `!=-` in two.
    if crate::sql::number_runs_into_word(sql) || crate::sql::operator_split_by_parser(sql) {
        return None;
    }
    // sqlparser reads `interval(0) '...'` without its precision, `x ISNULL` in a select list
    // as `x` under an alias, and a string continued over a line break as a string under a
    // string alias: the texts it reads instead.
    let cast = crate::sql::interval_precision_plain(sql);
    let sql = cast.as_deref().unwrap_or(sql);
    let spelled = crate::sql::isnull_operators_plain(sql);
    let sql = spelled.as_deref().unwrap_or(sql);
    let joined = crate::sql::string_continuations_joined(sql);
    let sql = joined.as_deref().unwrap_or(sql);
    // sqlparser does not know `TABLE name`; it means `SELECT * FROM name`. Nor `x
    // OPERATOR(pg_catalog.=) ANY (...)`, as pg_dump writes it. Nor COPY's `FREEZE on`. Nor
    // `FOR NO KEY UPDATE` and `FOR KEY SHARE`.
    parsed(sql)
        .or_else(|| crate::router::utility::table_shorthand(sql).and_then(|t| parsed(&t)))
        .or_else(|| crate::sql::catalog_operators_plain(sql).and_then(|t| parsed(&t)))
        .or_else(|| crate::sql::copy_options_plain(sql).and_then(|t| parsed(&t)))
        .or_else(|| crate::sql::lock_strengths_plain(sql).and_then(|t| parsed(&t)))
}

fn shared(v: Vec<Statement>) -> Parsed {
    Arc::new(
        v.into_iter()
            .map(|mut s| {
                // The statement may be written anew for the shards (see `unary_operands`).
                crate::sql::keep_operands_apart(&mut s);
                Arc::new(s)
            })
            .collect(),
    )
}

impl ParseCache {
    /// The statements of `sql`, from the cache or parsed now.
    pub fn get(&mut self, sql: &str) -> Option<Parsed> {
        self.get_shaped(sql, None)
    }

    /// As `get`, given the shape of `sql` when the caller has already worked it out.
    pub fn get_shaped(&mut self, sql: &str, shape: Option<Shape>) -> Option<Parsed> {
        if let Some((_, hit)) = self.recent.iter().rev().find(|(t, _)| t == sql) {
            return hit.clone();
        }
        if let Some(Entry::Text(hit)) = self.entries.get(sql) {
            let hit = hit.clone();
            self.remember(sql, hit.clone());
            return hit;
        }
        let shape = shape.or_else(|| (sql.len() <= LARGEST_TEXT).then(|| shape_of(sql)).flatten());
        let Some(shape) = shape else {
            let parsed = parse(sql).map(shared);
            self.keep(sql, Entry::Text(parsed.clone()));
            return parsed;
        };
        match self.entries.get(&shape.key) {
            Some(Entry::Template(t)) => {
                let parsed = shared(shape.fill(t));
                self.remember(sql, Some(parsed.clone()));
                return Some(parsed);
            }
            Some(Entry::Unshaped) => return parse(sql).map(shared),
            _ => {}
        }
        let parsed = parse(sql)?;
        let entry = match shape.proven_template(&parsed) {
            Some(t) => Entry::Template(Arc::new(t)),
            None => Entry::Unshaped,
        };
        self.keep(&shape.key, entry);
        Some(shared(parsed))
    }

    /// The proven template of a shape, if one is kept.
    pub fn template(&self, shape_key: &str) -> Option<Arc<Vec<Statement>>> {
        match self.entries.get(shape_key) {
            Some(Entry::Template(t)) => Some(t.clone()),
            _ => None,
        }
    }

    fn remember(&mut self, sql: &str, parsed: Option<Parsed>) {
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back((sql.to_string(), parsed));
    }

    fn keep(&mut self, key: &str, entry: Entry) {
        if key.len() > LARGEST_TEXT {
            return;
        }
        let w = weight(key);
        if self.bytes + w > BUDGET_BYTES {
            self.entries.clear();
            self.bytes = 0;
        }
        self.bytes += w;
        self.entries.insert(key.to_string(), entry);
    }

    /// Entries kept now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_of_one_shape_share_an_entry_and_keep_their_literals() {
        let mut c = ParseCache::default();
        for id in 0..1000 {
            let sql = format!("select * from accounts where id = {id} and owner = 'o{id}'");
            let got = c.get(&sql).unwrap();
            assert_eq!(*got[0], parse(&sql).unwrap()[0], "{sql}");
        }
        assert_eq!(c.len(), 1);
        // A text looked up again is the same parse, not a new fill.
        let sql = "select * from accounts where id = 7 and owner = 'o7'";
        assert!(Arc::ptr_eq(&c.get(sql).unwrap(), &c.get(sql).unwrap()));
    }

    #[test]
    fn a_text_looked_up_again_is_served_from_the_recent_texts() {
        let mut c = ParseCache::default();
        let p = "select * from t where id = $1";
        let first = c.get(p).unwrap();
        // The second lookup finds the exact entry and remembers it; the third the remembered one.
        assert!(Arc::ptr_eq(&first, &c.get(p).unwrap()));
        assert!(c.recent.iter().any(|(t, _)| t == p));
        assert!(Arc::ptr_eq(&first, &c.get(p).unwrap()));
        // A text sqlparser cannot parse stays unparsed however it is found.
        assert!(c.get("selec nonsense").is_none());
        assert!(c.get("selec nonsense").is_none());
        assert!(c.get("selec nonsense").is_none());
    }

    #[test]
    fn texts_a_shape_cannot_serve_are_still_parsed_right() {
        let mut c = ParseCache::default();
        for day in ["2020-01-01", "2021-02-03"] {
            let sql = format!("select * from t where d = date '{day}' and id = 1");
            assert_eq!(*c.get(&sql).unwrap()[0], parse(&sql).unwrap()[0]);
        }
        assert!(c.get("selec nonsense").is_none());
        let p = "select * from t where id = $1";
        assert_eq!(*c.get(p).unwrap()[0], parse(p).unwrap()[0]);
    }

    #[test]
    fn the_cache_stays_within_its_budget() {
        let mut c = ParseCache::default();
        for i in 0..20_000 {
            // Distinct shapes: the table name changes.
            c.get(&format!("select * from t{i} where id = 1"));
            assert!(c.bytes <= BUDGET_BYTES);
        }
    }
}
