//! Routes of simple-protocol texts, learned once per shape.
//!
//! A client that inlines its values sends a new text for every lookup (`... WHERE id = 5`, then
//! `... id = 6`), so a route by exact text would never be reused. Texts of one shape
//! (`sql::shape`) differ only in their literals, and the parse cache holds the shape's template,
//! proven to reproduce a real parse once its literals are put back. The first text of a shape
//! is planned in full as always; its template is then planned again with each literal as a
//! text parameter (`$1` for the first, and so on), recording what the planning read
//! (`router::learned_route`): when the only value it read was one key, or none, and both plannings
//! chose the same shard, later texts of the shape go to the shard that owns their own literal
//! in that place, without being parsed or planned.
//!
//! That holds because the planner reads a literal key and a parameter key the same way (the
//! literal's text through the key type's parser), and planning a parameter cannot look at any
//! other value without the recording seeing it. Only statements that become one `Plan::Shard`
//! are learned. INSERTs never are: they may be rewritten (keys from a sequence, columns filled
//! in from the catalog, INSERT ... SELECT). A literal that is not a valid key, or a reloaded
//! placement, goes back to full planning, which gives the proper answer or error.

use crate::placement::Placement;
use crate::router::learned_route::Route;
use crate::router::params::{recording, Params};
use crate::router::plan::{plan, Plan};
use crate::sql::Shape;
use bytes::Bytes;
use sqlparser::ast::Statement;
// Looked up with every simple-protocol text; keys are the session's own shapes.
use foldhash::HashMap;
use std::sync::Arc;

/// Shapes whose route a session keeps; past this the map starts again.
const MAX_SHAPES: usize = 256;
/// Longer shapes are not kept: point statements are short, and each key is held in memory.
pub const LONGEST_SHAPE: usize = 1024;

/// What a session learned of one shape.
#[derive(Debug)]
struct Learned {
    /// The placement it was learned with.
    placement: Arc<Placement>,
    /// None: planned in full every time.
    route: Option<Route>,
}

/// A session's learned routes by shape.
#[derive(Debug, Default)]
pub struct ShapeRoutes {
    by_shape: HashMap<String, Learned>,
}

impl ShapeRoutes {
    /// The plan of the text `shape` came from, when a route learned for the shape answers it.
    pub fn plan(&self, shape: &Shape, placement: &Arc<Placement>) -> Option<Plan> {
        let learned = self.by_shape.get(&shape.key)?;
        let route = learned.route.as_ref()?;
        if !route.learned_with(placement) {
            return None;
        }
        route.plan_by_text(|n| shape.literal_text(n))
    }

    /// Whether the shape has been looked at under this placement (learned or found unroutable).
    pub fn knows(&self, shape: &Shape, placement: &Arc<Placement>) -> bool {
        self.by_shape
            .get(&shape.key)
            .is_some_and(|l| Arc::ptr_eq(&l.placement, placement))
    }

    /// Records what the full planning of a text of `shape` (its proven `template`) showed:
    /// `full` is the plan that planning gave.
    pub fn learn(
        &mut self,
        shape: &Shape,
        template: &[Statement],
        full: &Plan,
        placement: &Arc<Placement>,
    ) {
        if shape.key.len() > LONGEST_SHAPE {
            return;
        }
        let route = route_of(shape, template, full, placement);
        if self.by_shape.len() >= MAX_SHAPES {
            self.by_shape.clear();
        }
        self.by_shape.insert(
            shape.key.clone(),
            Learned {
                placement: placement.clone(),
                route,
            },
        );
    }
}

fn route_of(
    shape: &Shape,
    template: &[Statement],
    full: &Plan,
    placement: &Arc<Placement>,
) -> Option<Route> {
    if !matches!(full, Plan::Shard { .. }) {
        return None;
    }
    let [stmt] = template else { return None };
    if matches!(stmt, Statement::Insert(_)) {
        return None;
    }
    let with_parameters = Shape::as_parameters(template)?;
    let params = parameters(shape);
    let (planned, reads) = recording(|| plan(&with_parameters[0], placement, &params));
    let route = Route::learn(&planned, &reads, &params, placement)?;
    // Both readings of this very text must agree before the shape is trusted with others.
    (route.plan(&params).as_ref() == Some(full)).then_some(route)
}

/// A shape's literals as text-format parameters.
fn parameters(shape: &Shape) -> Params {
    Params {
        values: shape
            .literal_texts()
            .into_iter()
            .map(|t| t.map(Bytes::from))
            .collect(),
        formats: vec![],
        types: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::shape_of;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn placement() -> Arc<Placement> {
        let config = crate::config::Config::three_shards(concat!(
            "[tables.items]\nshard_key=\"id\"\nkey_type=\"bigint\"\n",
            "[tables.users]\nshard_key=\"name\"\nkey_type=\"text\"\n",
            "[tables.kinds]\nreference=true\n",
        ));
        Arc::new(config.placement().unwrap())
    }

    fn parse(sql: &str) -> Vec<Statement> {
        Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap()
    }

    /// Learns from the first text, as a session does, then checks that for every text the
    /// learned route answers, its plan is the full planning's. Returns how many it answered.
    fn agrees(texts: &[String]) -> usize {
        let placement = placement();
        let mut routes = ShapeRoutes::default();
        let first = shape_of(&texts[0]).unwrap();
        let template = first.proven_template(&parse(&texts[0])).unwrap();
        let full = plan(&parse(&texts[0])[0], &placement, &Params::default());
        routes.learn(&first, &template, &full, &placement);
        assert!(routes.knows(&first, &placement));
        let mut answered = 0;
        for text in texts {
            let shape = shape_of(text).unwrap();
            assert_eq!(shape.key, first.key, "{text}");
            let full = plan(&parse(text)[0], &placement, &Params::default());
            if let Some(fast) = routes.plan(&shape, &placement) {
                assert_eq!(fast, full, "{text}");
                answered += 1;
            }
        }
        answered
    }

    fn texts(pattern: &str, values: &[&str]) -> Vec<String> {
        values.iter().map(|v| pattern.replace("{}", v)).collect()
    }

    const NUMBERS: [&str; 12] = [
        "1",
        "2",
        "3",
        "17",
        "99",
        "1000",
        "42",
        "7",
        "8",
        "9",
        "10",
        "123456789",
    ];

    #[test]
    fn point_statements_with_inlined_keys_route_by_their_own_key() {
        for pattern in [
            "select abalance from items where id = {}",
            "select * from items where id = {} and name = 'x'",
            "select * from items where name = 'y' and id = {} for update",
            "update items set name = 'z' where id = {}",
            "delete from items where id = {}",
            "select * from items where id = {}::bigint limit 5",
            "select * from items where id in ({})",
            "select * from items where id = '{}'",
        ] {
            let all = texts(pattern, &NUMBERS);
            assert_eq!(agrees(&all), all.len(), "{pattern}");
        }
        // A number and a string of the same shape: both read as the key's text.
        let mixed: Vec<String> = ["5", "'6'", "7", "'8'", "' 9 '"]
            .iter()
            .map(|v| format!("select * from items where id = {v}"))
            .collect();
        assert_eq!(agrees(&mixed), mixed.len());
        let names = ["alice", "bob", "it''s", "Zoë", "", " padded "];
        let all = texts("select * from users where name = '{}'", &names);
        assert_eq!(agrees(&all), all.len());
    }

    #[test]
    fn what_depends_on_more_than_one_key_is_planned_every_time() {
        for pattern in [
            "select * from items where id = {} or id = 5",
            "select * from items where id in ({}, 5)",
            "select * from items where id = -{}",
            "select * from items where name = '{}'",
            "insert into items (id, name) values ({}, 'x')",
            "select * from items where id = {}; select 1",
        ] {
            let all = texts(pattern, &NUMBERS);
            assert_eq!(agrees(&all), 0, "{pattern}");
        }
    }

    #[test]
    fn a_fixed_shard_and_values_that_are_no_key() {
        // A reference table answers on one shard whatever the literal.
        let all = texts("select * from kinds where name = '{}'", &["a", "b", "c"]);
        assert_eq!(agrees(&all), 3);
        // A literal that is not a valid key goes back to full planning (which refuses it).
        let all = texts("select * from items where id = '{}'", &["5", "x", "5.5"]);
        assert_eq!(agrees(&all), 1);
    }

    #[test]
    fn a_reloaded_placement_learns_again() {
        let placement = placement();
        let text = "select * from items where id = 5";
        let shape = shape_of(text).unwrap();
        let template = shape.proven_template(&parse(text)).unwrap();
        let full = plan(&parse(text)[0], &placement, &Params::default());
        let mut routes = ShapeRoutes::default();
        routes.learn(&shape, &template, &full, &placement);
        assert!(routes.plan(&shape, &placement).is_some());
        let reloaded = self::placement();
        assert!(routes.plan(&shape, &reloaded).is_none());
        assert!(!routes.knows(&shape, &reloaded));
    }
}
