//! Planning reads: which relations a query reads and where each lives, whether the rows it
//! joins are on one shard (co-located by key) or need a scatter, and the refusals when they
//! could be on several in a way the merge cannot reproduce.

use super::*;

/// Names of every CTE defined anywhere in the statement (they are not tables).
pub(crate) fn cte_names<V: sqlparser::ast::Visit>(node: &V) -> Vec<String> {
    struct Ctes(Vec<String>);
    impl sqlparser::ast::Visitor for Ctes {
        type Break = ();
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            if let Some(w) = &q.with {
                self.0.extend(
                    w.cte_tables
                        .iter()
                        .map(|c| c.alias.name.value.to_ascii_lowercase()),
                );
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = Ctes(Vec::new());
    let _ = node.visit(&mut v);
    v.0
}

/// Whether a name that is also a CTE's counts as the table. One named as a declared table may
/// shadow it in one place and not in another (its own body, a write's target), so the name
/// counts as the table: `plan_query` inlines such a CTE or refuses it; so does a name that
/// undeclared tables living on one shard would place there. A name only
/// `undeclared_tables = "reference"` would place is the CTE's: asyncpg names the CTE of its
/// type lookups `typeinfo_tree`.
fn name_is_table(placement: &Placement, name: &str) -> bool {
    placement.is_declared(name) || matches!(placement.rule(name), Some(TableRule::Pinned { .. }))
}

/// Relations of a query and how each is placed.
pub(crate) struct Relations {
    pub sharded: Vec<(String, KeyType, String)>, // (table, key type, key column)
    reference: usize,
    /// Shards of the tables that live on one shard (undeclared tables, see `TableRule::Pinned`).
    pinned: BTreeSet<usize>,
    undeclared: Option<String>,
}

impl Relations {
    /// Every relation is a reference table (or none is named): a full copy on every shard.
    pub(crate) fn only_reference(&self) -> bool {
        self.sharded.is_empty() && self.pinned.is_empty() && self.undeclared.is_none()
    }

    /// The shard of the tables that live on one shard, if any (the first, where they differ).
    pub(crate) fn pinned_shard(&self) -> Option<usize> {
        self.pinned.first().copied()
    }
}

pub(crate) fn relations<V: sqlparser::ast::Visit>(q: &V, placement: &Placement) -> Relations {
    let mut r = Relations {
        sharded: Vec::new(),
        reference: 0,
        pinned: BTreeSet::new(),
        undeclared: None,
    };
    let cte_names = cte_names(q);
    for name in &tables_read(q) {
        let text = name.to_string();
        // A CTE is named by one unqualified name (see `name_is_table`).
        let cte = name.0.len() == 1
            && cte_names.contains(&last_ident(name).to_ascii_lowercase())
            && !name_is_table(placement, &text);
        if is_catalog_relation(&text) || cte {
            continue;
        }
        match placement.rule(&text) {
            Some(TableRule::Sharded {
                key_column,
                key_type,
            }) => r.sharded.push((text, *key_type, key_column.clone())),
            Some(TableRule::Reference) => r.reference += 1,
            Some(TableRule::Pinned { shard }) => {
                r.pinned.insert(*shard);
            }
            None => {
                if r.undeclared.is_none() {
                    r.undeclared = Some(text)
                }
            }
        }
    }
    r
}

/// A statement on a table that lives on one shard: it runs there, provided every other table
/// it uses is there too (a reference table, or one on the same shard).
pub(super) fn on_pinned_shard<V: sqlparser::ast::Visit>(
    stmt: &V,
    placement: &Placement,
    shard: usize,
    write: bool,
) -> Plan {
    let rels = relations(stmt, placement);
    if let Some(name) = rels.undeclared {
        return undeclared(&name);
    }
    if let Some((table, _, _)) = rels.sharded.first() {
        return refuse(
            format!(
                "sharded table {table} cannot be combined with tables that live on shard {} only",
                placement.shard_names[shard]
            ),
            "Undeclared tables live on one shard (routing.undeclared_tables): join them with reference tables, or declare them.",
        );
    }
    if rels.pinned.len() > 1 {
        return refuse(
            "these tables live on different shards",
            "Declare them as reference tables, or keep undeclared tables on one shard.",
        );
    }
    Plan::Shard { shard, write }
}

/// The tables (and views) a statement names. A function called in FROM (`generate_series(1, 3)`,
/// `json_each(...)`) is not one, though sqlparser parses it as a table with arguments: it runs
/// wherever the statement runs, as a function in the select list does.
pub(super) fn tables_read<V: sqlparser::ast::Visit>(q: &V) -> Vec<ObjectName> {
    #[derive(Default)]
    struct Tables {
        names: Vec<ObjectName>,
        /// The relation about to be visited is a function's name.
        function_next: bool,
    }
    impl sqlparser::ast::Visitor for Tables {
        type Break = ();
        fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
            self.function_next = matches!(t, TableFactor::Table { args: Some(_), .. });
            ControlFlow::Continue(())
        }
        fn pre_visit_relation(&mut self, name: &ObjectName) -> ControlFlow<()> {
            if !std::mem::take(&mut self.function_next) {
                self.names.push(name.clone());
            }
            ControlFlow::Continue(())
        }
    }
    let mut tables = Tables::default();
    let _ = sqlparser::ast::Visit::visit(q, &mut tables);
    tables.names
}

pub(crate) fn plan_query(q: &Query, placement: &Placement, params: &Params) -> Plan {
    if let Some(refusal) = super::string_syntax::set_config_refused(q, params) {
        return refusal;
    }
    let writes = matches!(
        q.body.as_ref(),
        SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_)
    );
    if q.with.is_some() && !writes {
        // Planned as the derived tables the CTEs stand for; the shards still run the
        // statement as written when one of them answers it.
        if let Some(inlined) = super::inline_ctes::inlined(q) {
            return plan_query(&inlined, placement, params);
        }
        if let Some(name) = cte_names(q)
            .into_iter()
            .find(|n| name_is_table(placement, n))
        {
            return refuse(
                format!("a WITH query named {name}, as a declared table is, is not supported here"),
                "Give the CTE a name of its own.",
            );
        }
    }
    let rels = relations(q, placement);
    if let Some(name) = rels.undeclared {
        return undeclared(&name);
    }
    if let Some(plan) = super::writing_query::plan(q, placement, &rels) {
        return plan;
    }
    if let Some(&shard) = rels.pinned.first() {
        return on_pinned_shard(q, placement, shard, false);
    }
    if rels.sharded.is_empty() {
        if rels.reference == 0 && calls_set_config(q) {
            // set_config() changes session state: every shard must see it, like SET.
            return Plan::Session;
        }
        // Catalog, reference tables and table-less queries read the same on every shard.
        return Plan::Shard {
            shard: HOME,
            write: false,
        };
    }
    if let Some(plan) = super::exists::plan_exists(q, placement, params) {
        return plan;
    }
    if let SetExpr::Select(s) = q.body.as_ref() {
        if s.into.is_some() {
            return super::create_table::made_from_shards("SELECT ... INTO");
        }
    }
    let select = match q.body.as_ref() {
        SetExpr::Select(select) => select,
        SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => {
            return refuse(
                "WITH before an INSERT, UPDATE or DELETE of sharded tables is not supported",
                "Inline the CTE as a subquery, or read its rows first and write them as values.",
            )
        }
        _ => {
            if let Some(plan) = super::union::plan_union(q, placement, params)
                .or_else(|| super::keyed_sets::plan_keyed(q, placement, params))
            {
                return plan;
            }
            return refuse(
                "INTERSECT, EXCEPT and a UNION inside a UNION ALL over sharded tables are supported only when every branch returns its first table's shard key at one position; FETCH and FOR UPDATE of a set operation are not",
                "Select the shard key in each branch (Django's difference() and intersection() over one model do), or run each part as its own query.",
            );
        }
    };
    if q.with.is_some() {
        return refuse(
            "WITH queries over sharded tables are supported only as a SELECT each, read once, and not recursive",
            "Inline the CTE as a subquery, or query each shard key separately.",
        );
    }
    // Sharded tables of the top-level FROM, with the names they are referred to by, and the
    // derived tables that stand for a sharded table's rows.
    let mut top = crate::router::subquery::top_tables(select, placement);
    let no_table = top.is_empty();
    let mut covered = top.len();
    for (table, tables) in
        crate::router::subquery::derived_rows::derived_top_tables(select, placement)
    {
        top.push(table);
        covered += tables;
    }
    covered += crate::router::subquery::tied_laterals(select, &top, placement);
    // Subqueries in WHERE, the select list and ORDER BY tied to those tables by the shard
    // key run on each shard as written.
    let tied = match crate::router::subquery::tied_in(
        crate::router::subquery::per_row_exprs(q, select),
        &top,
        placement,
    ) {
        Ok(n) => n,
        Err(refusal) => return *refusal,
    };
    // `SELECT ... FROM (subquery) s`, whose rows are each shard's rows (SQLAlchemy's count()).
    if no_table && tied == 0 {
        if let Some(shards) =
            crate::router::subquery::derived_shards(select, &rels, placement, params)
        {
            return match shards.as_slice() {
                [one] => Plan::Shard {
                    shard: *one,
                    write: !q.locks.is_empty(),
                },
                _ => plan_scatter(q, select, shards, params, placement),
            };
        }
        // Django's `values("x").distinct().count()`.
        if let Some(plan) = super::distinct_count::plan_distinct_count(q, placement, params) {
            return plan;
        }
    }
    if covered.checked_add(tied) != Some(rels.sharded.len()) {
        return refuse(
            crate::router::subquery::UNTIED,
            "A subquery over a sharded table runs on each shard when it is in WHERE, the select list or ORDER BY and tied to the outer table by the shard key: EXISTS (... WHERE inner.key = outer.key), (SELECT ... WHERE inner.key = outer.key) or outer.key IN (SELECT inner.key ...). Otherwise join co-located tables on their shard keys.",
        );
    }
    if top.len() > 1 {
        if let Some(reason) = colocation_problem(select, &top) {
            return refuse(reason, "Join sharded tables only on their shard keys (tables with the same key type are co-located), or join with reference tables.");
        }
    }
    let mut keys = KeySet::Any;
    if let Some(w) = &select.selection {
        for (names, ty, col) in &top {
            let is_key = |e: &Expr| is_column(e, names, col);
            match keys_in(w, &is_key, *ty, params) {
                Ok(KeySet::Any) => {}
                Ok(found) => {
                    keys = found;
                    break;
                }
                Err(e) => return Plan::Reject(crate::router::keys::bad_key(e)),
            }
        }
    }
    let for_update = !q.locks.is_empty();
    let shards = match keys {
        KeySet::Values(vs) => shards_for(placement, &vs),
        KeySet::Any => (0..placement.shard_names.len()).collect(),
    };
    match shards.as_slice() {
        [] => Plan::Shard {
            shard: HOME,
            write: for_update,
        },
        [one] => Plan::Shard {
            shard: *one,
            write: for_update,
        },
        _ => match outer_join_problem(select, placement) {
            Some(reason) if !super::kept_rows::combinable(q, select, placement) => refuse(
                reason,
                "Such a join keeps rows that every shard holds. Use an inner join, keep the \
                 sharded side's rows instead (sharded LEFT JOIN reference), add a shard-key \
                 condition so one shard answers, or read the two tables apart.",
            ),
            _ => plan_scatter(q, select, shards, params, placement),
        },
    }
}

/// Why a read of several shards cannot run on each as written: an outer join keeps the rows
/// of a side that holds no sharded table (a reference table, a function, VALUES) against a
/// side that does. Every shard has that side whole, so a row of it that matches nothing
/// would come back once per shard.
fn outer_join_problem(select: &Select, placement: &Placement) -> Option<String> {
    select
        .from
        .iter()
        .find_map(|twj| joins_problem(twj, placement))
}

/// `outer_join_problem` for one FROM item, joins in parentheses judged as they stand first.
fn joins_problem(twj: &TableWithJoins, placement: &Placement) -> Option<String> {
    use sqlparser::ast::JoinOperator as J;
    let sharded = |f: &TableFactor| !relations(f, placement).sharded.is_empty();
    let nested = |f: &TableFactor| match f {
        TableFactor::NestedJoin {
            table_with_joins, ..
        } => joins_problem(table_with_joins, placement),
        _ => None,
    };
    if let Some(p) = nested(&twj.relation) {
        return Some(p);
    }
    let mut left = sharded(&twj.relation);
    for j in &twj.joins {
        if let Some(p) = nested(&j.relation) {
            return Some(p);
        }
        let right = sharded(&j.relation);
        let (keeps_left, keeps_right) = match &j.join_operator {
            J::Join(_) | J::Inner(_) | J::CrossJoin(_) => (false, false),
            J::Left(_) | J::LeftOuter(_) => (true, false),
            J::Right(_) | J::RightOuter(_) => (false, true),
            // FULL, and any kind PostgreSQL does not have: as keeping both sides.
            _ => (true, true),
        };
        let kept = if keeps_left && !left && right {
            Some("left")
        } else if keeps_right && !right && left {
            Some("right")
        } else {
            None
        };
        if let Some(side) = kept {
            return Some(format!(
                "an outer join keeping every row of its {side} side, which holds no sharded table, \
                 against a sharded table is not supported over several shards: each shard would \
                 return the unmatched rows"
            ));
        }
        left |= right;
    }
    None
}

/// The AND-connected conditions of `e`.
pub(crate) fn collect_and<'a>(e: &'a Expr, out: &mut Vec<&'a Expr>) {
    match e {
        Expr::Nested(i) => collect_and(i, out),
        Expr::BinaryOp {
            left,
            op: sqlparser::ast::BinaryOperator::And,
            right,
        } => {
            collect_and(left, out);
            collect_and(right, out);
        }
        other => out.push(other),
    }
}

/// The pairs of `top` that `JOIN right USING (columns)` joins on their shard keys: `right`
/// with each table before it whose shard key has the name of `right`'s, one of the columns.
/// PostgreSQL joins the one column of that name on the left; were there two (another table's
/// column of that name), it would refuse the join as ambiguous, so pairing every such table
/// is safe.
fn keys_joined_by_using<'a>(
    columns: &[sqlparser::ast::ObjectName],
    left: impl Iterator<Item = &'a TableFactor>,
    right: &TableFactor,
    top: &[(Vec<String>, KeyType, String)],
) -> Vec<(usize, usize)> {
    let named = |column: &str| {
        columns
            .iter()
            .any(|c| last_ident(c).eq_ignore_ascii_case(column))
    };
    let keyed = |f: &TableFactor| {
        let name = match f {
            TableFactor::Table { name, alias, .. } => alias
                .as_ref()
                .map_or_else(|| last_ident(name), |a| a.name.value.clone()),
            TableFactor::Derived { alias: Some(a), .. } => a.name.value.clone(),
            _ => return None,
        };
        top.iter().position(|(names, _, col)| {
            names.iter().any(|n| n.eq_ignore_ascii_case(&name)) && named(col)
        })
    };
    let Some(r) = keyed(right) else {
        return Vec::new();
    };
    let key = &top[r].2;
    left.filter_map(keyed)
        .filter(|&l| top[l].2.eq_ignore_ascii_case(key))
        .map(|l| (l, r))
        .collect()
}

/// Every pair of sharded tables must be connected by equalities of their key columns.
pub(crate) fn colocation_problem(
    select: &Select,
    top: &[(Vec<String>, KeyType, String)],
) -> Option<String> {
    colocation_problem_of(select.selection.as_ref(), &select.from, top)
}

/// `colocation_problem` of the tables `top` named in `from` (and elsewhere, as a write's
/// target), with the equalities of `selection` and of `from`'s joins.
pub(crate) fn colocation_problem_of(
    selection: Option<&Expr>,
    from: &[TableWithJoins],
    top: &[(Vec<String>, KeyType, String)],
) -> Option<String> {
    if top.iter().any(|t| t.1 != top[0].1) {
        return Some(
            "a join of tables sharded on keys of different types runs across shards".into(),
        );
    }
    let mut conjuncts: Vec<&Expr> = Vec::new();
    if let Some(w) = selection {
        collect_and(w, &mut conjuncts);
    }
    // Pairs of `top` joined by USING on both tables' shard key.
    let mut using_pairs: Vec<(usize, usize)> = Vec::new();
    for twj in from {
        for (i, j) in twj.joins.iter().enumerate() {
            use sqlparser::ast::{JoinConstraint, JoinOperator as J};
            let c = match &j.join_operator {
                J::Join(c)
                | J::Inner(c)
                | J::Left(c)
                | J::LeftOuter(c)
                | J::Right(c)
                | J::RightOuter(c)
                | J::FullOuter(c) => c,
                _ => {
                    return Some("this kind of join is not supported across sharded tables".into())
                }
            };
            match c {
                JoinConstraint::On(e) => collect_and(e, &mut conjuncts),
                JoinConstraint::Using(columns) => {
                    let left = std::iter::once(&twj.relation)
                        .chain(twj.joins[..i].iter().map(|j| &j.relation));
                    using_pairs.extend(keys_joined_by_using(columns, left, &j.relation, top));
                }
                _ => {}
            }
        }
    }
    // Union-find over the sharded tables by key equalities.
    let mut parent: Vec<usize> = (0..top.len()).collect();
    fn find(p: &mut Vec<usize>, i: usize) -> usize {
        if p[i] != i {
            let r = find(p, p[i]);
            p[i] = r;
        }
        p[i]
    }
    for (a, b) in using_pairs {
        let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
        parent[ra] = rb;
    }
    for c in conjuncts {
        if let Expr::BinaryOp {
            left,
            op: sqlparser::ast::BinaryOperator::Eq,
            right,
        } = c
        {
            let side = |e: &Expr| {
                top.iter().position(|(names, _, col)| {
                    matches!(strip(e), Expr::CompoundIdentifier(_))
                        && is_column(strip(e), names, col)
                })
            };
            if let (Some(a), Some(b)) = (side(left), side(right)) {
                let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
                parent[ra] = rb;
            }
        }
    }
    let root = find(&mut parent, 0);
    (1..top.len())
        .any(|i| find(&mut parent, i) != root)
        .then(|| {
            "a join of sharded tables that is not on their shard keys runs across shards"
                .to_string()
        })
}
