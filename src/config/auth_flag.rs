//! The `--auth` shorthand users know from dufs: `NAME:SECRET@/path:rw,/other:ro` gives an
//! account read (`ro`, the default) or read-write (`rw`) access; `@/path:ro` is anonymous.

use crate::access::{Rule, Who};

/// One parsed `--auth` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The account and its secret (a password or an argon2id PHC string); `None` is anonymous.
    pub account: Option<(String, String)>,
    /// Paths with `true` for read-write.
    pub paths: Vec<(String, bool)>,
}

/// Parses `NAME:SECRET@/p:rw,/q` or `@/p:ro`.
pub fn parse(text: &str) -> Result<Grant, String> {
    // The paths start at the first "@/": a PHC string never holds "@", a password may.
    let at = text.find("@/").ok_or("expected NAME:SECRET@/path[:ro|:rw] or @/path[:ro|:rw]")?;
    let (who, paths) = (&text[..at], &text[at + 1..]);
    let account = if who.is_empty() {
        None
    } else {
        let (name, secret) = who.split_once(':').ok_or("expected NAME:SECRET before @")?;
        if !crate::access::valid_account_name(name) {
            return Err(format!("`{name}` is not a valid account name"));
        }
        if secret.is_empty() {
            return Err("the secret is empty".into());
        }
        Some((name.to_owned(), secret.to_owned()))
    };
    let mut parsed = Vec::new();
    for item in paths.split(',') {
        let (path, write) = match item.rsplit_once(':') {
            Some((path, "rw")) => (path, true),
            Some((path, "ro")) => (path, false),
            Some((_, mode)) => return Err(format!("`{mode}` is not a mode: use ro or rw")),
            None => (item, false),
        };
        Rule::parse_path(path)?;
        parsed.push((path.to_owned(), write));
    }
    Ok(Grant { account, paths: parsed })
}

/// Adds a grant to the rules: to the rule with the same path if there is one, else a new rule.
pub fn merge(rules: &mut Vec<Rule>, grant: &Grant) {
    let who = match &grant.account {
        Some((name, _)) => Who::Account(name.clone()),
        None => Who::Anyone,
    };
    for (path, write) in &grant.paths {
        let Ok(pattern) = Rule::parse_path(path) else {
            continue;
        };
        let index = match rules.iter().position(|r| r.path == pattern) {
            Some(index) => index,
            None => {
                rules.push(Rule { path: pattern, ..Rule::default() });
                rules.len() - 1
            }
        };
        let rule = &mut rules[index];
        let mut lists = vec![&mut rule.read, &mut rule.list];
        if *write {
            lists.extend([&mut rule.create, &mut rule.update, &mut rule.delete]);
        }
        for list in lists {
            if !list.contains(&who) {
                list.push(who.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let grant = parse("alice:pw@/a:rw,/b").unwrap();
        assert_eq!(grant.account, Some(("alice".into(), "pw".into())));
        assert_eq!(grant.paths, vec![("/a".into(), true), ("/b".into(), false)]);
        assert_eq!(parse("@/:ro").unwrap().account, None);
        assert!(parse("alice@/").is_err());
        assert!(parse("alice:pw").is_err());
        assert!(parse("alice:pw@/a:rx").is_err());
        assert!(parse("alice:pw@/a//b").is_err());
    }

    #[test]
    fn merges_same_path() {
        let mut rules = Vec::new();
        merge(&mut rules, &parse("alice:pw@/:rw").unwrap());
        merge(&mut rules, &parse("@/:ro").unwrap());
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].read, vec![Who::Account("alice".into()), Who::Anyone]);
        assert_eq!(rules[0].delete, vec![Who::Account("alice".into())]);
    }
}
