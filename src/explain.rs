//! `larder check` and `larder explain`: the rules in words, and the decision for each method
//! on one path for one principal, with the rule that made it. Pure: it reads the settings
//! and asks [`crate::access`] and [`crate::meter`], the same functions requests go through.

use std::fmt::Write;

use crate::access::{Action, Decision, Principal, Rule, Who};
use crate::config::Settings;
use crate::meter::{Price, price_for};
use crate::path::ResourcePath;

const ACTIONS: [(Action, &str); 5] = [
    (Action::Read, "read"),
    (Action::List, "list"),
    (Action::Create, "create"),
    (Action::Update, "update"),
    (Action::Delete, "delete"),
];

fn who_in_words(who: &Who) -> String {
    match who {
        Who::Anyone => "anyone, signed in or not".into(),
        Who::Authenticated => "any signed-in account".into(),
        Who::PathAccount => "the account the path names".into(),
        Who::Account(name) => format!("account {name}"),
    }
}

/// Every rule in words, in configuration order, then what covers the rest.
pub fn rules(settings: &Settings) -> String {
    let mut out = String::new();
    let admins: Vec<&str> =
        settings.accounts.values().filter(|a| a.admin).map(|a| a.name.as_str()).collect();
    let _ = writeln!(out, "Admins may do everything everywhere: {}.", list_or_none(&admins));
    for (i, rule) in settings.rules.rules().iter().enumerate() {
        let _ = writeln!(out, "\nrule[{i}] {} and everything beneath it:", rule.display_path());
        for (action, name) in ACTIONS {
            let who: Vec<String> = rule.who(action).iter().map(who_in_words).collect();
            let who: Vec<&str> = who.iter().map(String::as_str).collect();
            let _ = writeln!(out, "  {name:<7} {}", list_or_none(&who));
        }
        let _ = writeln!(out, "  {}", refusal(rule));
        if rule.unlisted {
            let _ = writeln!(out, "  left out of listings; still readable by its URL");
        }
        if let Some(price) = rule.price.filter(|p| *p > 0) {
            let _ = writeln!(
                out,
                "  reading costs {price} credits, once per account (owners, writers and admins read free)"
            );
        }
    }
    let _ = writeln!(out, "\nPaths no rule covers: admins only.");
    out
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() { "nobody".into() } else { names.join(", ") }
}

fn refusal(rule: &Rule) -> &'static str {
    if rule.hidden {
        "anyone else who may not read gets 404, as if nothing were there"
    } else {
        "anyone else gets 401 (not signed in) or 403 (signed in)"
    }
}

/// The principal `larder explain --as NAME` stands for (`None`: an anonymous client).
pub fn principal(settings: &Settings, name: Option<&str>) -> Result<Principal, String> {
    match name {
        None => Ok(Principal::anonymous()),
        Some(name) => match settings.accounts.get(name) {
            Some(account) => Ok(Principal::account(name, account.admin)),
            None => Err(format!("no account named `{name}` in the configuration")),
        },
    }
}

/// The decision for every method on `path` for `principal`, with the rule that made it.
pub fn path(settings: &Settings, path: &ResourcePath, principal: &Principal) -> String {
    let rules = &settings.rules;
    let segments = path.segments();
    let mut out = String::new();
    let who = principal.account.as_deref().map_or("an anonymous client".into(), |n| {
        format!("account {n}{}", if principal.admin { " (admin)" } else { "" })
    });
    let _ = writeln!(out, "{} as {who}", path.to_url());
    let decided_by = match rules.matching(segments) {
        _ if principal.admin => "admins may do everything everywhere".to_owned(),
        Some(found) => {
            let i = rules.rules().iter().position(|r| std::ptr::eq(r, found.rule)).unwrap_or(0);
            format!("rule[{i}] {}", found.rule.display_path())
        }
        None => "no rule covers this path: admins only".to_owned(),
    };
    let _ = writeln!(out, "decided by {decided_by}");
    let read = if path.is_collection() { Action::List } else { Action::Read };
    let outcome = |action| in_words(rules.decide(principal, segments, action));
    let mut reading = outcome(read);
    if rules.decide(principal, segments, read) == Decision::Allow
        && let Price::Due(price) = price_for(rules, principal, segments, None)
    {
        reading = format!("402 until bought ({price} credits), then allowed");
    }
    let noun = if path.is_collection() { "listing" } else { "read" };
    for method in ["GET", "HEAD", "OPTIONS"] {
        let _ = writeln!(out, "  {method:<8} {reading} ({noun})");
    }
    let trace = if settings.trace {
        format!("{} ({noun})", outcome(read))
    } else {
        "405: trace = false".into()
    };
    let _ = writeln!(out, "  {:<8} {trace}", "TRACE");
    if path.is_collection() {
        let _ = writeln!(out, "  {:<8} {} (create the collection)", "PUT", outcome(Action::Create));
        let _ =
            writeln!(out, "  {:<8} {} (create a resource in it)", "POST", outcome(Action::Create));
    } else {
        let _ = writeln!(
            out,
            "  {:<8} {} when new (create); {} when it exists (update)",
            "PUT",
            outcome(Action::Create),
            outcome(Action::Update)
        );
        let _ = writeln!(out, "  {:<8} 405 (POST goes to a collection)", "POST");
    }
    let _ = writeln!(out, "  {:<8} {} (delete)", "DELETE", outcome(Action::Delete));
    out
}

fn in_words(decision: Decision) -> String {
    match decision {
        Decision::Allow => "allowed",
        Decision::Unauthenticated => "401: sign in",
        Decision::Forbidden => "403: not allowed",
        Decision::Hidden => "404: hidden",
        Decision::OutOfScope => "403: outside the token's scope",
    }
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(toml: &str) -> Settings {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("larder.toml");
        std::fs::write(&file, toml).unwrap();
        let overrides = crate::config::Overrides {
            root: Some(dir.path().join("root")),
            config: Some(file),
            ..Default::default()
        };
        Settings::load(overrides, &|_| None).unwrap()
    }

    const PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$YrXQ6dsx8PX2OpBLEB0SVRh/J9EOdVt1zkS6UW9ZXB4";

    #[test]
    fn explains_the_rule_that_decides() {
        let settings = settings(&format!(
            "[[account]]\nname = \"alice\"\npassword = \"{PHC}\"\n[[account]]\nname = \"bob\"\npassword = \"{PHC}\"\n\
             [[rule]]\npath = \"/\"\nread = [\"*\"]\n\
             [[rule]]\npath = \"/home/{{account}}\"\nread = [\"{{account}}\"]\nwrite = [\"{{account}}\"]\nhidden = true\n\
             [[rule]]\npath = \"/shop\"\nread = [\"@authenticated\"]\nprice = 5\n"
        ));
        let words = rules(&settings);
        assert!(words.contains("rule[1] /home/{account} and everything beneath it:"), "{words}");
        assert!(words.contains("anyone else who may not read gets 404"), "{words}");
        assert!(words.contains("reading costs 5 credits"), "{words}");

        let home = ResourcePath::parse("/home/alice/notes.txt").unwrap();
        let bob = principal(&settings, Some("bob")).unwrap();
        let text = path(&settings, &home, &bob);
        assert!(text.contains("decided by rule[1] /home/{account}"), "{text}");
        assert!(text.contains("GET      404: hidden (read)"), "{text}");
        let alice = principal(&settings, Some("alice")).unwrap();
        let text = path(&settings, &home, &alice);
        assert!(
            text.contains("PUT      allowed when new (create); allowed when it exists"),
            "{text}"
        );

        let shop = ResourcePath::parse("/shop/book.pdf").unwrap();
        let text = path(&settings, &shop, &Principal::anonymous());
        assert!(text.contains("GET      401: sign in (read)"), "{text}");
        let text = path(&settings, &shop, &bob);
        assert!(text.contains("GET      402 until bought (5 credits), then allowed"), "{text}");
        assert!(principal(&settings, Some("carol")).is_err());
    }
}
