//! The SQL of a move's objects on the shards, as text: the capture of changes to the moving
//! slots on a source, the staging table on the target, and the filters that pick a move's rows.
//!
//! Capture: an AFTER row trigger on each sharded table of a source logs the key of every row
//! written in a moving slot (the old key too, when an UPDATE changes it or a DELETE removes it)
//! into `shardgate.move_log`, in the writer's own transaction, so a logged key is visible
//! exactly when its change is. Catching up re-copies every row of each logged key, which is
//! idempotent, so a key logged twice or re-copied after a crash does no harm. TRUNCATE cannot
//! be logged by key, so a source refuses it for the move's duration.

use crate::placement::{KeyType, SLOT_COUNT};
use crate::sql::{identifier, string_literal};

/// A sharded table as a move handles it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovingTable {
    /// As the config declares it.
    pub name: String,
    pub key: String,
    pub key_type: KeyType,
    /// Its position among the moved tables: names the move's objects for it.
    pub n: usize,
}

/// Where logged keys wait on a source.
pub const LOG: &str = "CREATE TABLE IF NOT EXISTS shardgate.move_log (
    seq bigserial PRIMARY KEY,
    move_id bigint NOT NULL,
    tbl int NOT NULL,
    key text NOT NULL
)";

const REFUSE_TRUNCATE: &str = "CREATE OR REPLACE FUNCTION shardgate.move_refuse_truncate() \
RETURNS trigger LANGUAGE plpgsql AS $refuse$
BEGIN
    RAISE EXCEPTION 'table % is having slots moved off this shard, and TRUNCATE cannot follow the move', TG_TABLE_NAME
        USING ERRCODE = 'object_in_use',
              HINT = 'Wait for shardgate move-slots to finish, or undo the move with shardgate move-slots --abort.';
END
$refuse$";

/// `'{1,2,3}'::int[]`.
pub fn slots_array(slots: &[u32]) -> String {
    let list: Vec<String> = slots.iter().map(u32::to_string).collect();
    format!("'{{{}}}'::int[]", list.join(","))
}

/// True for rows whose key (an SQL expression) lies in `slots`.
pub fn in_slots(key_sql: &str, key_type: KeyType, slots: &[u32]) -> String {
    format!(
        "{} = ANY({})",
        key_type.slot_sql(key_sql, SLOT_COUNT),
        slots_array(slots)
    )
}

/// True for rows whose key column is one of `keys` (their text forms); `column_type` is the
/// key column's SQL type, so an index on it serves the look-up.
pub fn key_in(key: &str, column_type: &str, keys: &[String]) -> String {
    let list: Vec<String> = keys.iter().map(|k| string_literal(k)).collect();
    format!(
        "{} = ANY(ARRAY[{}]::text[]::{column_type}[])",
        identifier(key),
        list.join(",")
    )
}

fn capture_function_name(move_id: i64, t: &MovingTable) -> String {
    format!("shardgate.move_capture_{move_id}_{}", t.n)
}

/// The capture function and triggers for one table on one source. Creating the triggers waits
/// for the table's writers in flight, so every write that commits afterwards is logged.
pub fn install(move_id: i64, t: &MovingTable, slots: &[u32]) -> String {
    let key = |rec: &str| format!("{rec}.{}", identifier(&t.key));
    let moving = |rec: &str| in_slots(&key(rec), t.key_type, slots);
    let log = |rec: &str| {
        format!(
            "INSERT INTO shardgate.move_log (move_id, tbl, key) VALUES ({move_id}, {}, ({})::text);",
            t.n,
            key(rec)
        )
    };
    let table = identifier(&t.name);
    let function = capture_function_name(move_id, t);
    // NEW does not exist in a DELETE's trigger, nor OLD in an INSERT's: nested IFs keep each
    // expression to the records that exist.
    format!(
        "{LOG};
{REFUSE_TRUNCATE};
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $capture$
BEGIN
    IF TG_OP <> 'DELETE' THEN
        IF {new_moving} THEN
            {log_new}
        END IF;
    END IF;
    IF TG_OP = 'DELETE' THEN
        IF {old_moving} THEN
            {log_old}
        END IF;
    ELSIF TG_OP = 'UPDATE' THEN
        IF {new_key} IS DISTINCT FROM {old_key} THEN
            IF {old_moving} THEN
                {log_old}
            END IF;
        END IF;
    END IF;
    RETURN NULL;
END
$capture$;
CREATE OR REPLACE TRIGGER shardgate_move_capture AFTER INSERT OR UPDATE OR DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION {function}();
CREATE OR REPLACE TRIGGER shardgate_move_truncate BEFORE TRUNCATE ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION shardgate.move_refuse_truncate()",
        new_moving = moving("NEW"),
        old_moving = moving("OLD"),
        log_new = log("NEW"),
        log_old = log("OLD"),
        new_key = key("NEW"),
        old_key = key("OLD"),
    )
}

/// Removes the capture of one table (idempotent; the table must exist).
pub fn remove(move_id: i64, t: &MovingTable) -> String {
    let table = identifier(&t.name);
    format!(
        "DROP TRIGGER IF EXISTS shardgate_move_capture ON {table};
DROP TRIGGER IF EXISTS shardgate_move_truncate ON {table};
DROP FUNCTION IF EXISTS {}()",
        capture_function_name(move_id, t)
    )
}

/// The target's staging table for one moved table: copied rows wait there, unseen by queries,
/// until the cut-over moves them into the table.
pub fn staging(move_id: i64, t: &MovingTable) -> String {
    format!("shardgate.move_{move_id}_{}", t.n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounts() -> MovingTable {
        MovingTable {
            name: "accounts".into(),
            key: "id".into(),
            key_type: KeyType::Integer,
            n: 0,
        }
    }

    #[test]
    fn the_capture_logs_each_side_of_a_change_only_in_the_moving_slots() {
        let sql = install(7, &accounts(), &[3, 5]);
        assert!(sql.contains("FUNCTION shardgate.move_capture_7_0()"));
        assert!(sql.contains("= ANY('{3,5}'::int[])"));
        assert!(sql.contains("VALUES (7, 0, (NEW.\"id\")::text)"));
        assert!(sql.contains("VALUES (7, 0, (OLD.\"id\")::text)"));
        assert!(sql.contains("BEFORE TRUNCATE ON \"accounts\""));
        // Every use of NEW sits under a test that excludes DELETE.
        let new_at = sql.find("NEW.").unwrap();
        assert!(sql[..new_at].contains("IF TG_OP <> 'DELETE'"));
    }

    #[test]
    fn keys_are_quoted_and_cast_to_the_columns_type() {
        let f = key_in("id", "bigint", &["1".into(), "it's".into()]);
        assert_eq!(f, "\"id\" = ANY(ARRAY['1','it''s']::text[]::bigint[])");
    }

    #[test]
    fn removal_names_what_install_created() {
        let t = accounts();
        let sql = remove(7, &t);
        assert!(sql.contains("shardgate_move_capture ON \"accounts\""));
        assert!(sql.contains("shardgate_move_truncate ON \"accounts\""));
        assert!(sql.contains("shardgate.move_capture_7_0()"));
        assert_eq!(staging(7, &t), "shardgate.move_7_0");
    }
}
