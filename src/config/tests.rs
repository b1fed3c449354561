use super::*;

#[test]
fn settings_list_every_key_and_no_password() {
    let c = Config::from_toml(
        "[[users]]\nname = \"ops\"\npassword = \"hunter2\"\nadmin = true\n\
         [[shards]]\nname = \"s0\"\nurl = \"postgres://u:shardpw@h/db\"\n\
         [tables.t]\nreference = true\n",
    )
    .unwrap();
    let settings = c.settings();
    let text = format!("{settings:?}");
    assert!(
        !text.contains("hunter2") && !text.contains("shardpw"),
        "{text}"
    );
    let get = |k: &str| {
        settings
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("users[0].admin"), Some("true"));
    assert_eq!(get("shards[0].url"), Some("postgres://u:<redacted>@h/db"));
    assert_eq!(get("tables.t.reference"), Some("true"));
    assert_eq!(get("server.listen"), Some("127.0.0.1:6432"));
}

const GOOD: &str = r#"
    [server]
    listen = "127.0.0.1:7000"
    [metrics]
    listen = "127.0.0.1:9931"
    [[users]]
    name = "app"
    password = "secret"
    auth = "scram-sha-256"
    [[shards]]
    name = "s0"
    url = "postgres://postgres:pw@127.0.0.1:5433/app"
    [[shards]]
    name = "s1"
    url = "postgres://postgres@%2Ftmp%2Fpg/app"
"#;

#[test]
fn good_config_loads() {
    let c = Config::from_toml(GOOD).unwrap();
    assert_eq!(c.server.listen, "127.0.0.1:7000");
    assert_eq!(c.shards.len(), 2);
    assert_eq!(c.users[0].auth, AuthMethod::ScramSha256);
    let summary = c.summary();
    assert!(
        summary.contains("s0: 127.0.0.1:5433 db=app user=postgres"),
        "{summary}"
    );
    assert!(
        !summary.contains("pw") && !summary.contains("secret"),
        "{summary}"
    );
}

#[test]
fn unknown_key_is_named() {
    let err = Config::from_toml(&GOOD.replace("listen = \"127.0.0.1:7000\"", "lisen = \"x\""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("lisen"), "{err}");
}

#[test]
fn wrong_type_is_named() {
    let err = Config::from_toml(&GOOD.replace("name = \"s1\"", "name = 1"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("name"), "{err}");
}

#[test]
fn duplicate_shard_is_named() {
    let err = Config::from_toml(&GOOD.replace("name = \"s1\"", "name = \"s0\""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("duplicate shard name \"s0\""), "{err}");
}

#[test]
fn bad_shard_url_is_named() {
    let err =
        Config::from_toml(&GOOD.replace("postgres://postgres:pw@127.0.0.1:5433/app", "mysql://x"))
            .unwrap_err()
            .to_string();
    assert!(err.contains("shard \"s0\""), "{err}");
}

#[test]
fn no_shards_is_an_error() {
    let err = Config::from_toml("[[users]]\nname=\"a\"\nauth=\"trust\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("no [[shards]]"), "{err}");
}

#[test]
fn tables_are_checked() {
    let ok = format!("{GOOD}\n[tables.accounts]\nshard_key = \"id\"\nkey_type = \"bigint\"\n[tables.countries]\nreference = true\n");
    let c = Config::from_toml(&ok).unwrap();
    let p = c.placement().unwrap();
    assert!(matches!(
        p.rule("public.accounts"),
        Some(TableRule::Sharded { .. })
    ));
    assert_eq!(p.rule("\"countries\""), Some(&TableRule::Reference));
    for (bad, needle) in [
        ("[tables.t]\nkey_type = \"bigint\"", "needs shard_key"),
        ("[tables.t]\nshard_key = \"id\"", "needs key_type"),
        (
            "[tables.t]\nshard_key = \"id\"\nkey_type = \"float\"",
            "not supported",
        ),
        (
            "[tables.t]\nreference = true\nshard_key = \"id\"",
            "reference table",
        ),
    ] {
        let err = Config::from_toml(&format!("{GOOD}\n{bad}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{bad}: {err}");
    }
}

#[test]
fn undeclared_tables_go_where_the_config_says() {
    let rule = |value: &str| {
        let text = format!("{GOOD}\n[routing]\nundeclared_tables = \"{value}\"\n");
        Config::from_toml(&text).map(|c| c.placement().unwrap().rule("django_migrations").cloned())
    };
    assert_eq!(rule("refuse").unwrap(), None);
    assert_eq!(rule("reference").unwrap(), Some(TableRule::Reference));
    let shard = &Config::from_toml(GOOD).unwrap().shards[0].name;
    assert_eq!(rule(shard).unwrap(), Some(TableRule::Pinned { shard: 0 }));
    let err = rule("nowhere").unwrap_err().to_string();
    assert!(err.contains("undeclared_tables"), "{err}");
    // Catalogs are never given the default.
    let c = Config::from_toml(&format!(
        "{GOOD}\n[routing]\nundeclared_tables = \"reference\"\n"
    ))
    .unwrap();
    assert_eq!(c.placement().unwrap().rule("pg_class"), None);
}

#[test]
fn example_config_is_valid() {
    let c = Config::from_toml(include_str!("../../config/shardgate.example.toml")).unwrap();
    assert_eq!(c.shards.len(), 2);
}

#[test]
fn snapshot_consistency_needs_the_gate() {
    let with = |t: &str| Config::from_toml(&format!("{GOOD}\n[transactions]\n{t}\n"));
    let e = with("consistency = \"snapshot\"").unwrap_err().to_string();
    assert!(e.contains("transactions.snapshot = true"), "{e}");
    assert!(with("consistency = \"snapshot\"\nsnapshot = true").is_ok());
    assert!(with("consistency = \"strict\"").is_err());
    let user = |line: &str, snapshot: bool| {
        Config::from_toml(&format!(
            "[[shards]]\nname=\"a\"\nurl=\"postgres://u@h/d\"\n[transactions]\nsnapshot = {snapshot}\n[[users]]\nname=\"u\"\nauth=\"trust\"\n{line}"
        ))
    };
    assert!(user("consistency = \"snapshot\"", true).is_ok());
    let e = user("consistency = \"snapshot\"", false)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("needs transactions.snapshot"), "{e}");
    assert!(user("consistency = \"strong\"", true).is_err());
    assert!(with("snapshot = true\noracle = \"oracle.internal:6440\"").is_ok());
    assert!(with("oracle = \"nowhere\"").is_err());
}

#[test]
fn debug_output_hides_passwords() {
    let c = Config::from_toml(GOOD).unwrap();
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("secret") && !dbg.contains(":pw@"), "{dbg}");
}
