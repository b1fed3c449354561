//! The SET that gives a setting the value a startup packet (or `-c name=value`) gives it.
//!
//! A startup parameter's value reaches PostgreSQL as raw text, which the setting parses itself.
//! `SET name = 'text'` does the same for most settings, but for those read as lists of
//! identifiers (search_path and the like) a quoted string is one identifier: `SET search_path
//! = 'app, public'` names a single schema `"app, public"`. Those are written as one literal per
//! element, split and unquoted as PostgreSQL splits the raw text, and SET quotes each back.

/// Settings PostgreSQL reads as lists of identifiers (`GUC_LIST_QUOTE`) that a session may set.
const IDENTIFIER_LISTS: [&str; 4] = [
    "search_path",
    "temp_tablespaces",
    "local_preload_libraries",
    "session_preload_libraries",
];

/// `SET name = ...` giving `name` the raw startup `value`.
pub fn set_statement(name: &str, value: &str) -> String {
    let literal = crate::sql::string_literal;
    if !IDENTIFIER_LISTS.contains(&name.to_ascii_lowercase().as_str()) {
        return format!("SET {name} = {}", literal(value));
    }
    match split_identifiers(value) {
        Some(items) if !items.is_empty() => {
            let items: Vec<String> = items.iter().map(|i| literal(i)).collect();
            format!("SET {name} = {}", items.join(", "))
        }
        // Empty, or text PostgreSQL would refuse: passed whole, for the server to judge.
        _ => format!("SET {name} = {}", literal(value)),
    }
}

/// The identifiers of a comma-separated list as PostgreSQL splits one (`SplitIdentifierString`):
/// blanks around items dropped, `"..."` taken as written with `""` for a quote, other items
/// folded to lower case. None for text it would refuse (an empty item, an unclosed quote).
fn split_identifiers(text: &str) -> Option<Vec<String>> {
    let mut items = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return items.is_empty().then_some(items);
        }
        let mut item = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        item.push('"');
                    }
                    '"' => break,
                    c => item.push(c),
                }
            }
            if item.is_empty() {
                return None;
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    break;
                }
                item.push(c.to_ascii_lowercase());
                chars.next();
            }
            if item.is_empty() {
                return None;
            }
        }
        items.push(item);
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.next() {
            None => return Some(items),
            Some(',') => {}
            Some(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_of_identifiers_are_set_item_by_item() {
        assert_eq!(
            set_statement("search_path", "\"$user\", public"),
            "SET search_path = '$user', 'public'"
        );
        assert_eq!(
            set_statement("search_path", "App,  \"My Schema\",x"),
            "SET search_path = 'app', 'My Schema', 'x'"
        );
        assert_eq!(
            set_statement("search_path", "\"it's \"\"q\"\"\""),
            "SET search_path = 'it''s \"q\"'"
        );
        assert_eq!(set_statement("search_path", ""), "SET search_path = ''");
        assert_eq!(
            set_statement("search_path", "a,,b"),
            "SET search_path = 'a,,b'"
        );
        assert_eq!(
            set_statement("DateStyle", "ISO, MDY"),
            "SET DateStyle = 'ISO, MDY'"
        );
    }
}
