//! The `options` startup parameter (libpq's `options=`, `PGOPTIONS`): command-line switches
//! PostgreSQL applies to the new session, such as `-c work_mem=64MB`.
//!
//! shardgate's own settings (`-c shardgate.consistency=snapshot`) are taken out and applied by
//! the proxy, as `SET shardgate.*` would be; everything else is passed on to every shard,
//! re-quoted the way PostgreSQL reads it, so each shard applies it as it would for a direct
//! connection. Splitting follows PostgreSQL's own rule (`pg_split_opts`): arguments are
//! separated by whitespace, and a backslash makes the next character literal.

/// `options`, split into shardgate's own settings (name without the prefix, value) and the text
/// to forward (None when nothing is left).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StartupOptions {
    pub own: Vec<(String, String)>,
    pub forward: Option<String>,
    /// The forwarded `-c name=value` settings, for a pooled connection given them by SET.
    pub settings: Vec<(String, String)>,
}

impl StartupOptions {
    pub fn forwarded_settings(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.settings.iter().cloned()
    }
}

const PREFIX: &str = "shardgate.";

pub fn parse(options: &str) -> StartupOptions {
    let args = split(options);
    let mut own = Vec::new();
    let mut settings = Vec::new();
    let mut kept: Vec<String> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        // `-c name=value` (two arguments), `-cname=value` and `--name=value`.
        let (setting, used) = if arg == "-c" {
            (args.get(i + 1).map(String::as_str), 2)
        } else if let Some(rest) = arg.strip_prefix("--") {
            (Some(rest), 1)
        } else if let Some(rest) = arg.strip_prefix("-c") {
            (Some(rest), 1)
        } else {
            (None, 1)
        };
        let own_setting = setting
            .and_then(|s| s.split_once('='))
            .filter(|(name, _)| name.to_ascii_lowercase().starts_with(PREFIX));
        match own_setting {
            Some((name, value)) => {
                own.push((name[PREFIX.len()..].to_ascii_lowercase(), value.to_string()));
            }
            None => {
                if let Some((name, value)) = setting.and_then(|s| s.split_once('=')) {
                    settings.push((name.to_string(), value.to_string()));
                }
                kept.extend(args[i..(i + used).min(args.len())].iter().cloned())
            }
        }
        i += used;
    }
    let forward =
        (!kept.is_empty()).then(|| kept.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" "));
    StartupOptions {
        own,
        forward,
        settings,
    }
}

/// The arguments of an options string, as PostgreSQL splits them.
fn split(options: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut current = String::new();
    let mut in_arg = false;
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        if c.is_ascii_whitespace() {
            if in_arg {
                args.push(std::mem::take(&mut current));
                in_arg = false;
            }
            continue;
        }
        in_arg = true;
        if c == '\\' {
            if let Some(next) = chars.next() {
                current.push(next);
            }
        } else {
            current.push(c);
        }
    }
    if in_arg {
        args.push(current);
    }
    args
}

/// One argument, escaped so that `split` gives it back.
fn quote(arg: &str) -> String {
    let mut out = String::with_capacity(arg.len());
    for c in arg.chars() {
        if c.is_ascii_whitespace() || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_settings_are_taken_out_and_the_rest_forwarded() {
        let o = parse("-c shardgate.consistency=snapshot -c work_mem=7MB");
        assert_eq!(o.own, vec![("consistency".into(), "snapshot".into())]);
        assert_eq!(o.forward.as_deref(), Some("-c work_mem=7MB"));

        let o = parse("--shardgate.snapshot_scope=all -cShardgate.Consistency=shard");
        assert_eq!(
            o.own,
            vec![
                ("snapshot_scope".into(), "all".into()),
                ("consistency".into(), "shard".into())
            ]
        );
        assert_eq!(o.forward, None);
    }

    #[test]
    fn escapes_survive_the_round_trip() {
        let o = parse(r"-c search_path=a\ b,c -c application_name=x\\y");
        assert_eq!(o.own, vec![]);
        let forward = o.forward.unwrap();
        assert_eq!(
            split(&forward),
            vec!["-c", "search_path=a b,c", "-c", r"application_name=x\y"]
        );
    }

    #[test]
    fn odd_input_is_kept_as_postgresql_would_see_it() {
        assert_eq!(parse("").forward, None);
        assert_eq!(parse("   ").forward, None);
        // A dangling -c is forwarded; PostgreSQL reports it.
        assert_eq!(parse("-c").forward.as_deref(), Some("-c"));
        assert_eq!(
            parse("-c shardgate.x").forward.as_deref(),
            Some("-c shardgate.x")
        );
    }
}
