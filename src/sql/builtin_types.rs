//! The OIDs of PostgreSQL's built-in types, by the names SQL spells them with.
//!
//! Built-in types have the same OID on every server of every release (they are fixed in the
//! catalog's initial data), so a type named in SQL text, such as a parameter type of
//! `PREPARE name (int, text) AS ...`, can be given to the extended protocol as an OID without
//! asking a server. A type modifier (`varchar(10)`, `numeric(10, 2)`) does not change the OID,
//! and PostgreSQL ignores it for parameters too. A name this table does not know (a user's
//! type, a domain, a quoted or schema-qualified name outside `pg_catalog`) is `None`: the
//! caller must then not guess.

/// The OID of the built-in type `name` names, written as SQL allows (any case, any spacing, a
/// type modifier, a `pg_catalog.` prefix, `[]` for its array type).
pub fn oid_of(name: &str) -> Option<u32> {
    let mut plain = String::with_capacity(name.len());
    let mut depth = 0u32;
    for c in name.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.checked_sub(1)?,
            _ if depth > 0 => {}
            '"' => return None,
            c => plain.push(c.to_ascii_lowercase()),
        }
    }
    if depth > 0 {
        return None;
    }
    let words: Vec<&str> = plain.split_ascii_whitespace().collect();
    let mut joined = words.join(" ");
    let mut array = false;
    while let Some(element) = joined.strip_suffix("[]") {
        joined = element.trim_ascii_end().to_string();
        array = true;
    }
    if let Some(rest) = joined.strip_suffix(" array") {
        joined = rest.to_string();
        array = true;
    }
    let base = joined.strip_prefix("pg_catalog.").unwrap_or(&joined);
    let (scalar, of_array) = TYPES
        .iter()
        .find(|(names, _, _)| names.contains(&base))
        .map(|&(_, scalar, of_array)| (scalar, of_array))?;
    if array {
        of_array
    } else {
        Some(scalar)
    }
}

/// The name SQL can give the built-in type (or array of one) whose OID is `oid`.
pub fn name_of(oid: u32) -> Option<String> {
    TYPES.iter().find_map(|(names, scalar, array)| {
        if *scalar == oid {
            Some(names[0].to_string())
        } else if *array == Some(oid) {
            Some(format!("{}[]", names[0]))
        } else {
            None
        }
    })
}

/// The name PostgreSQL's own messages give the built-in type whose OID is `oid` (`bigint`,
/// `double precision`), as its format_type writes it.
pub fn formatted(oid: u32) -> Option<String> {
    let standard = match oid {
        16 => "boolean",
        20 => "bigint",
        21 => "smallint",
        23 => "integer",
        700 => "real",
        701 => "double precision",
        1042 => "character",
        1043 => "character varying",
        1083 => "time without time zone",
        1114 => "timestamp without time zone",
        1184 => "timestamp with time zone",
        1266 => "time with time zone",
        1562 => "bit varying",
        _ => return name_of(oid),
    };
    Some(standard.to_string())
}

/// How messages name the type whose OID is `oid`: `money (OID 790)`, or `OID 16507` for a type
/// that is not built in.
pub fn described(oid: u32) -> String {
    // Pseudo-types are not in the table (no SQL text names them as a value's type), but a
    // row value's type is one a refusal can meet.
    const RECORD: u32 = 2249;
    if oid == RECORD {
        return format!("record (OID {oid})");
    }
    name_of(oid).map_or_else(|| format!("OID {oid}"), |n| format!("{n} (OID {oid})"))
}

/// Each built-in type: the names SQL spells it with, its OID, and its array type's OID.
const TYPES: &[(&[&str], u32, Option<u32>)] = &[
    (&["bool", "boolean"], 16, Some(1000)),
    (&["bytea"], 17, Some(1001)),
    (&["name"], 19, Some(1003)),
    (&["int8", "bigint"], 20, Some(1016)),
    (&["int2", "smallint"], 21, Some(1005)),
    (&["int4", "int", "integer"], 23, Some(1007)),
    (&["text"], 25, Some(1009)),
    (&["oid"], 26, Some(1028)),
    (&["json"], 114, Some(199)),
    (&["xml"], 142, Some(143)),
    (&["float4", "real"], 700, Some(1021)),
    (&["float8", "double precision"], 701, Some(1022)),
    (&["money"], 790, Some(791)),
    (&["macaddr"], 829, Some(1040)),
    (&["inet"], 869, Some(1041)),
    (&["cidr"], 650, Some(651)),
    (&["bpchar", "char", "character"], 1042, Some(1014)),
    (
        &["varchar", "character varying", "char varying"],
        1043,
        Some(1015),
    ),
    (&["date"], 1082, Some(1182)),
    (&["time", "time without time zone"], 1083, Some(1183)),
    (
        &["timestamp", "timestamp without time zone"],
        1114,
        Some(1115),
    ),
    (
        &["timestamptz", "timestamp with time zone"],
        1184,
        Some(1185),
    ),
    (&["interval"], 1186, Some(1187)),
    (&["timetz", "time with time zone"], 1266, Some(1270)),
    (&["bit"], 1560, Some(1561)),
    (&["varbit", "bit varying"], 1562, Some(1563)),
    (&["numeric", "decimal", "dec"], 1700, Some(1231)),
    (&["regclass"], 2205, Some(2210)),
    (&["regtype"], 2206, Some(2211)),
    (&["uuid"], 2950, Some(2951)),
    (&["jsonb"], 3802, Some(3807)),
];

#[cfg(test)]
mod tests {
    use super::{formatted, oid_of};

    #[test]
    fn types_are_named_as_postgresqls_messages_name_them() {
        assert_eq!(formatted(20).as_deref(), Some("bigint"));
        assert_eq!(formatted(1184).as_deref(), Some("timestamp with time zone"));
        assert_eq!(formatted(1009).as_deref(), Some("text[]"));
        assert_eq!(formatted(16507), None);
    }

    #[test]
    fn names_as_sql_writes_them() {
        assert_eq!(oid_of("int"), Some(23));
        assert_eq!(oid_of("INTEGER"), Some(23));
        assert_eq!(oid_of("pg_catalog.int8"), Some(20));
        assert_eq!(oid_of("varchar(10)"), Some(1043));
        assert_eq!(oid_of("character  varying (10)"), Some(1043));
        assert_eq!(oid_of("numeric(10, 2)"), Some(1700));
        assert_eq!(oid_of("timestamp(3) with time zone"), Some(1184));
        assert_eq!(oid_of("double precision"), Some(701));
        assert_eq!(oid_of("text[]"), Some(1009));
        assert_eq!(oid_of("int [ ]"), None);
        assert_eq!(oid_of("integer array"), Some(1007));
        assert_eq!(oid_of("bigint[][]"), Some(1016));
    }

    #[test]
    fn an_oid_is_named_so_that_the_name_gives_it_back() {
        for oid in [16, 20, 23, 25, 701, 1009, 1043, 1184, 1700, 2951, 3802] {
            let name = super::name_of(oid).unwrap();
            assert_eq!(oid_of(&name), Some(oid), "{name}");
        }
        assert_eq!(super::name_of(16384), None);
    }

    #[test]
    fn other_types_are_not_guessed() {
        assert_eq!(oid_of("mood"), None);
        assert_eq!(oid_of("public.int4"), None);
        assert_eq!(oid_of("\"int4\""), None);
        assert_eq!(oid_of("varchar(10"), None);
        assert_eq!(oid_of("int)"), None);
        // float(p) is real or double precision by p.
        assert_eq!(oid_of("float(10)"), None);
    }
}
