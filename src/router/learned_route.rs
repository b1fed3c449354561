//! A learned route: what one planning of a statement shows about every later planning of it.
//!
//! Planning a Bind walks the statement's syntax tree; for a point query the answer is always
//! "the shard that owns `$k`", or always one fixed shard. So when a recorded planning read no
//! parameter value and chose one shard, that shard is the route; when the only value it read
//! was one key `$k` and it chose that key's shard, the route is "the shard of `$k`". Planning
//! reads values only through `Params`, and its path up to that key cannot depend on them, so
//! another value of `$k` leads to its own shard the same way. A value that is NULL or cannot be
//! read as a key, or a reloaded placement, goes back to full planning, which gives the proper
//! answer.

use crate::placement::{KeyType, KeyValue, Placement};
use crate::router::params::{Params, Read};
use crate::router::plan::Plan;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct Route {
    to: To,
    /// The placement the route was learned with.
    placement: Arc<Placement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum To {
    Shard {
        shard: usize,
        write: bool,
    },
    ShardOfKey {
        param: usize,
        ty: KeyType,
        write: bool,
    },
}

impl Route {
    /// The route a planning shows, if the plan holds for every later Bind.
    pub fn learn(
        plan: &Plan,
        reads: &[Read],
        params: &Params,
        placement: &Arc<Placement>,
    ) -> Option<Route> {
        let Plan::Shard { shard, write } = *plan else {
            return None;
        };
        let to = match reads {
            [] => To::Shard { shard, write },
            [Read::Key(param, ty)] => {
                let key = params.key(*param, *ty);
                match key {
                    Ok(Some(k)) if placement.shard_of(&k) == shard => To::ShardOfKey {
                        param: *param,
                        ty: *ty,
                        write,
                    },
                    _ => return None,
                }
            }
            _ => return None,
        };
        Some(Route {
            to,
            placement: placement.clone(),
        })
    }

    /// Whether it was learned with this placement (a reload makes a new one).
    pub fn learned_with(&self, placement: &Arc<Placement>) -> bool {
        Arc::ptr_eq(&self.placement, placement)
    }

    /// `plan` for values given as text, as a text-format parameter carries them: `text(n)` is
    /// the text of `$n` (None for NULL). A shape's literals take this way, without a `Params`.
    pub fn plan_by_text<'a>(&self, text: impl FnOnce(usize) -> Option<&'a str>) -> Option<Plan> {
        match self.to {
            To::Shard { shard, write } => Some(Plan::Shard { shard, write }),
            To::ShardOfKey { param, ty, write } => {
                let key = KeyValue::from_text(ty, text(param)?).ok()?;
                Some(Plan::Shard {
                    shard: self.placement.shard_of(&key),
                    write,
                })
            }
        }
    }

    /// The plan for these values, or None when they need a full planning.
    pub fn plan(&self, params: &Params) -> Option<Plan> {
        match self.to {
            To::Shard { shard, write } => Some(Plan::Shard { shard, write }),
            // Another Parse of the same text may declare another type for the parameter.
            To::ShardOfKey { param, ty, .. } if !params.typed_as_key(param, ty) => None,
            To::ShardOfKey { param, ty, write } => match params.key(param, ty) {
                Ok(Some(k)) => Some(Plan::Shard {
                    shard: self.placement.shard_of(&k),
                    write,
                }),
                _ => None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::params::recording;
    use bytes::Bytes;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn placement() -> Arc<Placement> {
        let config = crate::config::Config::three_shards(
            "[tables.items]\nshard_key=\"id\"\nkey_type=\"bigint\"\n[tables.kinds]\nreference=true\n",
        );
        Arc::new(config.placement().unwrap())
    }

    fn text(values: &[Option<&str>]) -> Params {
        Params {
            values: values
                .iter()
                .map(|v| v.map(|s| Bytes::copy_from_slice(s.as_bytes())))
                .collect(),
            formats: vec![],
            types: Default::default(),
        }
    }

    /// Plans `sql` fully for each set of values and checks that a route learned from the
    /// first gives the same plan for all the others it answers.
    fn agrees(sql: &str, values: &[Vec<Option<&str>>]) -> Option<Route> {
        let placement = placement();
        let stmt = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0);
        let first = text(&values[0]);
        let (plan, reads) = recording(|| crate::router::plan::plan(&stmt, &placement, &first));
        let route = Route::learn(&plan, &reads, &first, &placement)?;
        for v in values {
            let params = text(v);
            let full = crate::router::plan::plan(&stmt, &placement, &params);
            if let Some(cached) = route.plan(&params) {
                assert_eq!(cached, full, "{sql} with {v:?}");
            }
            // Values given as text (a shape's literals) take the same route.
            let by_text = route.plan_by_text(|n| v.get(n.checked_sub(1)?).copied().flatten());
            assert_eq!(by_text, route.plan(&params), "{sql} with {v:?} as text");
        }
        Some(route)
    }

    fn keys(n: usize) -> Vec<Vec<Option<&'static str>>> {
        const K: [&str; 12] = [
            "1", "2", "3", "17", "99", "1000", "-5", "42", "7", "8", "9", "10",
        ];
        K.iter()
            .take(n)
            .map(|k| vec![Some(*k), Some("x")])
            .collect()
    }

    #[test]
    fn point_statements_route_by_their_key() {
        for sql in [
            "select * from items where id = $1 and name = $2",
            "select * from items where name = $2 and id = $1",
            "update items set name = $2 where id = $1",
            "delete from items where id = $1 and name = $2",
            "insert into items (id, name) values ($1, $2)",
            "select * from items where id = $1::bigint and name = $2 for update",
        ] {
            let route = agrees(sql, &keys(12)).unwrap_or_else(|| panic!("{sql}"));
            assert!(matches!(route.to, To::ShardOfKey { param: 1, .. }), "{sql}");
        }
    }

    #[test]
    fn fixed_and_unroutable_statements() {
        let fixed = agrees("select * from kinds where name = $2", &keys(3)).unwrap();
        assert!(matches!(fixed.to, To::Shard { .. }));
        // Scattered, several keys, keys in an array: planned every time.
        for sql in [
            "select * from items where name = $2",
            "select * from items where id in ($1, $1) and name = $2",
            "select * from items where id = any($1) and name = $2",
        ] {
            let params = vec![vec![Some("{1}"), Some("2")]];
            let p = if sql.contains("any") {
                params
            } else {
                vec![vec![Some("1"), Some("2")]]
            };
            assert!(agrees(sql, &p).is_none(), "{sql}");
        }
        // A NULL key or one that is not a number goes back to full planning.
        let route = agrees("select * from items where id = $1", &[vec![Some("5")]]).unwrap();
        assert!(route.plan(&text(&[None])).is_none());
        assert!(route.plan(&text(&[Some("x")])).is_none());
        // A reloaded placement is another one: the route is learned again.
        assert!(!route.learned_with(&placement()));
    }
}
