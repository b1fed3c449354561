//! What a grouped merge is told to do with each column the shards return (`AggSpec`): the
//! planner's answer, which `executor::merge` carries out.

/// What the merge does with one column the shards return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AggColumn {
    Group,
    /// A column every shard gives one and the same value within a group, so the merge keeps
    /// the first: a constant (`SELECT 'total', count(*)`), or a reference table's column
    /// selected without being grouped, which PostgreSQL accepts only when that table's primary
    /// key is grouped (Django groups by the key alone) and every shard's copy holds alike.
    Carried,
    Count,
    Sum,
    Min,
    Max,
    /// bit_or(x), bit_and(x) and bit_xor(x) of an integer column: the partials ORed (ANDed,
    /// XORed).
    BitOr,
    BitAnd,
    BitXor,
    /// sum(x) on the shards; `count` is the column of the hidden count(x), `float_sum` the
    /// column of the hidden sum of x as double precision (used when x is a float type, because
    /// PostgreSQL accumulates avg(real) in double precision while sum(real) stays real).
    Avg {
        count: usize,
        float_sum: Option<usize>,
    },
    /// An aggregate whose shards' partials concatenate, in the order the shards' rows come (an
    /// order PostgreSQL leaves unspecified too, without an ORDER BY in the call, which is
    /// refused).
    Joined(Concatenation),
    /// A hidden count(x) feeding an Avg.
    AvgCount,
    /// A hidden sum((x) * 1::float8) feeding an Avg.
    AvgFloatSum,
    /// An item computed over merged aggregates and group columns (see `router::computed`):
    /// `template` reads the columns `parts` by their part names and is evaluated per group
    /// after the merge.
    Computed {
        template: String,
        parts: Vec<usize>,
        /// The client's parameters (`$n`, 1-based) the template reads, bound again with the
        /// client's values when it is evaluated.
        params: Vec<usize>,
    },
    /// count(DISTINCT x): the number of distinct non-null values in column `values`.
    CountDistinct {
        values: usize,
    },
    /// The hidden x of a count(DISTINCT x), one value per shard row. `with_null`: a NULL is
    /// one more value, as SELECT DISTINCT x keeps one NULL row (a count of such rows).
    DistinctValue {
        with_null: bool,
    },
}

impl AggColumn {
    /// What the column is, as an error message names it.
    pub fn called(&self) -> &'static str {
        match self {
            AggColumn::Group => "the grouping",
            AggColumn::Carried => "the value",
            AggColumn::Count | AggColumn::AvgCount => "count",
            AggColumn::Sum => "sum",
            AggColumn::Min => "min",
            AggColumn::Max => "max",
            AggColumn::BitOr => "bit_or",
            AggColumn::BitAnd => "bit_and",
            AggColumn::BitXor => "bit_xor",
            AggColumn::Avg { .. } | AggColumn::AvgFloatSum => "avg",
            AggColumn::Joined(Concatenation::Strings { .. }) => "string_agg",
            AggColumn::Joined(Concatenation::Arrays) => "array_agg",
            AggColumn::Joined(Concatenation::JsonbArrays) => "jsonb_agg",
            AggColumn::Computed { .. } => "an expression over aggregates",
            AggColumn::CountDistinct { .. } | AggColumn::DistinctValue { .. } => {
                "count(DISTINCT ...)"
            }
        }
    }
}

/// What a `Joined` column's partials are, and so how they concatenate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Concatenation {
    /// string_agg(x, separator) of text: the partial strings joined with the separator.
    Strings { separator: Vec<u8> },
    /// array_agg(x) of a value that is not an array: the one-dimensional arrays' elements.
    Arrays,
    /// jsonb_agg(x): the JSON arrays' elements.
    JsonbArrays,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AggSpec {
    /// One per returned column (client's, then hidden).
    pub columns: Vec<AggColumn>,
    /// HAVING's column: a boolean (an aggregate, a group column, or the condition computed
    /// after the merge), whose groups are kept only where it is true.
    pub having: Option<usize>,
    /// The client's query has no GROUP BY, so its answer is one row even when the shards return
    /// none (their GROUP BY was only added for count(DISTINCT)).
    pub single_group: bool,
    /// The answer is one row: the number of groups across shards (those HAVING keeps, if any),
    /// in the first column, which the shards describe as count(*) (a count of distinct rows or
    /// of a grouped query's groups, see `plan::distinct_count`).
    pub count_groups: bool,
}

impl AggSpec {
    /// Whether some column is computed after the merge (and may read the client's values).
    pub fn computes(&self) -> bool {
        self.columns
            .iter()
            .any(|c| matches!(c, AggColumn::Computed { .. }))
    }
}

/// The column of an aggregate of this kind (see `kinds::aggregate_kind`) whose shards'
/// partials combine on their own: count, sum, min, max and the bitwise ones. None for avg and
/// count(DISTINCT ...), which need columns beside them.
pub(super) fn partial(kind: &str) -> Option<AggColumn> {
    Some(match kind {
        "count" => AggColumn::Count,
        "sum" => AggColumn::Sum,
        "min" => AggColumn::Min,
        "max" => AggColumn::Max,
        "bit_or" => AggColumn::BitOr,
        "bit_and" => AggColumn::BitAnd,
        "bit_xor" => AggColumn::BitXor,
        _ => return None,
    })
}
