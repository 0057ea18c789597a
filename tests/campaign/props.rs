//! Generated inputs (proptest) for every parser and decision a request goes through: path
//! normalisation, rule matching, Range, preconditions, Authorization and the configuration
//! file. The property everywhere: a decision or a clean error, never a panic; plus the
//! round trips and invariants that apply.

use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use http::{HeaderMap, HeaderValue};
use larder::access::{Action, Decision, Principal, Rule, Rules, Who};
use larder::config::{Overrides, Settings, env_none};
use larder::http::conditional::{Outcome, Preconditions, Validators};
use larder::http::range::{MAX_PARTS, Ranges, resolve};
use larder::path::ResourcePath;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::common::Options;

/// Runs `property` on `cases` inputs from `strategy`, seeded; panics with the minimal
/// failing input. Returns the number of inputs tried.
fn check<S: Strategy>(
    name: &str,
    options: &Options,
    cases: u32,
    strategy: S,
    property: impl Fn(S::Value) -> Result<(), TestCaseError>,
) -> u32
where
    S::Value: std::fmt::Debug,
{
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let seed = options.seed.to_le_bytes().repeat(4);
    let rng = proptest::test_runner::TestRng::from_seed(
        proptest::test_runner::RngAlgorithm::ChaCha,
        &seed,
    );
    let mut runner = TestRunner::new_with_rng(config, rng);
    if let Err(e) = runner.run(&strategy, property) {
        panic!("property {name} failed: {e}");
    }
    cases
}

/// Pieces that paths are made of, the tricky ones over-represented.
fn path_text() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "/",
        "/",
        "/",
        "a",
        "b",
        ".",
        "..",
        "%2e",
        "%2E%2e",
        "%2f",
        "%5c",
        "\\",
        "%00",
        "%",
        "%z",
        "%c3%a9",
        "é",
        "%ff",
        "?",
        "#",
        ";",
        " ",
        "%20",
        "~",
        "{account}",
        "%25",
        "\u{202e}",
        "%0a",
        "//",
    ]);
    prop_oneof![
        prop::collection::vec(piece, 0..12).prop_map(|p| p.concat()),
        any::<String>(),
        "/[ -~]{0,40}",
    ]
}

fn who() -> impl Strategy<Value = Who> {
    prop_oneof![
        Just(Who::Anyone),
        Just(Who::Authenticated),
        Just(Who::PathAccount),
        prop::sample::select(vec!["alice", "bob", "carol"])
            .prop_map(|n| Who::Account(n.to_owned())),
    ]
}

fn rule() -> impl Strategy<Value = Rule> {
    let segment = prop::sample::select(vec!["a", "b", "home", "{account}", "shop"]);
    (
        prop::collection::vec(segment, 0..4),
        [
            prop::collection::vec(who(), 0..3),
            prop::collection::vec(who(), 0..3),
            prop::collection::vec(who(), 0..3),
            prop::collection::vec(who(), 0..3),
            prop::collection::vec(who(), 0..3),
        ],
        any::<(bool, bool)>(),
        prop::option::of(0u64..100),
    )
        .prop_filter_map(
            "a parseable rule path",
            |(segments, [read, list, create, update, delete], (hidden, unlisted), price)| {
                let path = Rule::parse_path(&format!("/{}", segments.join("/"))).ok()?;
                Some(Rule { path, read, list, create, update, delete, hidden, unlisted, price })
            },
        )
}

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_owned()),
        "\"[a-z0-9]{0,8}\"",
        "W/\"[a-z0-9]{0,8}\"",
        "(\"[a-z0-9]{0,4}\", ?){0,4}\"[a-z0-9]{0,4}\"",
        Just("Wed, 21 Oct 2015 07:28:00 GMT".to_owned()),
        Just("Sunday, 06-Nov-94 08:49:37 GMT".to_owned()),
        "[ -~]{0,30}",
    ]
}

pub fn run(options: &Options) -> Vec<String> {
    let many = if options.long { 200_000 } else { 10_000 };
    let few = if options.long { 20_000 } else { 1_000 };
    let mut lines = Vec::new();

    let n = check("path", options, many, path_text(), |raw| {
        if let Ok(path) = ResourcePath::parse(&raw) {
            for segment in path.segments() {
                prop_assert!(
                    segment != "." && segment != ".." && !segment.is_empty(),
                    "{raw:?} kept {segment:?}"
                );
                prop_assert!(
                    !segment.contains('/') && !segment.contains('\0'),
                    "{raw:?} kept {segment:?}"
                );
            }
            let again = ResourcePath::parse(&path.to_url());
            prop_assert_eq!(
                again.as_ref(),
                Ok(&path),
                "{:?} does not round-trip through {}",
                raw,
                path.to_url()
            );
        }
        Ok(())
    });
    lines.push(format!("path normalisation: {n} targets; every accepted path has no dot, empty, slash or NUL segment and round-trips through its URL"));

    let principals = [
        Principal::anonymous(),
        Principal::account("alice", false),
        Principal::account("bob", false),
        Principal::account("root", true),
    ];
    let actions = [Action::Read, Action::List, Action::Create, Action::Update, Action::Delete];
    let segments = prop::collection::vec(
        prop::sample::select(vec!["a", "b", "home", "alice", "bob", "shop", "x"]),
        0..5,
    );
    let n = check(
        "rules",
        options,
        many,
        (prop::collection::vec(rule(), 0..8), segments, 0..4usize),
        |(rules, segments, p)| {
            let rules = Rules::new(rules);
            let segments: Vec<String> = segments.into_iter().map(String::from).collect();
            for action in actions {
                let decision = rules.decide(&principals[p], &segments, action);
                if principals[p].admin {
                    prop_assert_eq!(decision, Decision::Allow, "an admin may do everything");
                }
                if principals[p].account.is_some() {
                    prop_assert_ne!(
                        decision,
                        Decision::Unauthenticated,
                        "signed in, yet asked to sign in"
                    );
                }
            }
            Ok(())
        },
    );
    lines.push(format!("rule matching: {n} rule sets × 4 principals × 5 actions; admins always allowed, signed-in accounts never asked to sign in"));

    let field = prop_oneof![
        "bytes=[0-9, \\-]{0,30}",
        "[ -~]{0,30}",
        (0u64..200, 0u64..200).prop_map(|(a, b)| format!("bytes={a}-{b}")),
        (1u64..200).prop_map(|n| format!("bytes=-{n}"))
    ];
    let n = check("range", options, many, (field, 0u64..150), |(field, len)| {
        match resolve(&field, len) {
            Ranges::Parts(parts) => {
                prop_assert!(!parts.is_empty() && parts.len() <= MAX_PARTS);
                for (first, last) in &parts {
                    prop_assert!(first <= last && *last < len, "{field} on {len}: {parts:?}");
                }
                // Ascending, apart, and never more bytes than the whole.
                for pair in parts.windows(2) {
                    prop_assert!(pair[0].1 + 1 < pair[1].0, "{field} on {len}: {parts:?}");
                }
                let sent: u64 = parts.iter().map(|(first, last)| last - first + 1).sum();
                prop_assert!(sent <= len);
            }
            Ranges::Whole | Ranges::Unsatisfiable => {}
        }
        // Round trips of the simple forms.
        if let Some((a, b)) = field.strip_prefix("bytes=").and_then(|r| r.split_once('-')) {
            if let (Ok(a), Ok(b)) = (a.parse::<u64>(), b.parse::<u64>()) {
                if a <= b && a < len {
                    prop_assert_eq!(resolve(&field, len), Ranges::Parts(vec![(a, b.min(len - 1))]));
                }
            } else if let (true, Ok(n)) = (a.is_empty(), b.parse::<u64>()) {
                if n > 0 && len > 0 {
                    prop_assert_eq!(
                        resolve(&field, len),
                        Ranges::Parts(vec![(len - n.min(len), len - 1)])
                    );
                }
            }
        }
        Ok(())
    });
    lines.push(format!("Range: {n} fields; every part inside the representation, ascending and apart, at most {MAX_PARTS} and never more bytes than the whole, simple forms exact"));

    let fields =
        ["if-match", "if-none-match", "if-modified-since", "if-unmodified-since", "if-range"];
    let headers = prop::collection::vec((0..fields.len(), header_value()), 0..6);
    let current = prop::option::of((
        prop::option::of("[a-z0-9]{0,8}"),
        prop::option::of(0u64..2_000_000_000),
    ));
    let n = check(
        "preconditions",
        options,
        many,
        (headers, current, any::<bool>()),
        |(pairs, current, read)| {
            let mut map = HeaderMap::new();
            for (i, value) in &pairs {
                if let Ok(value) = HeaderValue::from_str(value) {
                    map.append(fields[*i], value);
                }
            }
            let preconditions = Preconditions::parse(&map);
            let modified =
                current.as_ref().and_then(|(_, m)| m.map(|s| UNIX_EPOCH + Duration::from_secs(s)));
            let validators =
                current.as_ref().map(|(etag, _)| Validators { etag: etag.as_deref(), modified });
            let outcome = preconditions.evaluate(read, validators);
            let only =
                |name: &str| pairs.len() == 1 && fields[pairs[0].0] == name && pairs[0].1 == "*";
            if only("if-match") && current.is_none() {
                prop_assert_eq!(outcome, Outcome::Failed, "If-Match: * on nothing");
            }
            if only("if-none-match") && current.is_some() && !read {
                prop_assert_eq!(outcome, Outcome::Failed, "If-None-Match: * on something");
            }
            Ok(())
        },
    );
    lines.push(format!("preconditions: {n} header sets × current validators; If-Match: * and If-None-Match: * exact"));

    let n = check(
        "authorization",
        options,
        many,
        (prop::collection::vec(any::<u8>(), 0..80), "[^:\\p{Cc}]{1,12}", "[^\\p{Cc}]{0,12}"),
        |(raw, name, password)| {
            let (scheme, rest) = larder::auth::split_scheme(&raw);
            prop_assert!(scheme.len() + rest.len() <= raw.len());
            let _ = larder::auth::parse_basic(rest);
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{name}:{password}"));
            prop_assert_eq!(
                larder::auth::parse_basic(encoded.as_bytes()),
                Some((name.clone(), password.clone()))
            );
            Ok(())
        },
    );
    lines.push(format!(
        "Authorization: {n} byte strings and Basic credentials; every credential round-trips"
    ));

    let dir = tempfile::tempdir().unwrap();
    let line = prop_oneof![
        prop::sample::select(vec![
            "port = 8080",
            "port = -1",
            "port = 70000",
            "port = \"x\"",
            "bind = \"::1\"",
            "bind = \"nowhere\"",
            "realm = \"\"",
            "realm = \"a\\\"b\"",
            "max_upload = \"10 MiB\"",
            "max_upload = \"10 XB\"",
            "max_upload = 5",
            "sign_in_limit = 0",
            "header_timeout = \"0s\"",
            "header_timeout = \"1y\"",
            "max_connections = 0",
            "[[account]]",
            "name = \"alice\"",
            "name = \"\"",
            "name = \"a/b\"",
            "password = \"x\"",
            "admin = true",
            "plan = \"none\"",
            "[[rule]]",
            "path = \"/\"",
            "path = \"relative\"",
            "path = \"/{account}\"",
            "read = [\"*\"]",
            "read = [\"nobody\"]",
            "write = [\"@authenticated\"]",
            "price = 5",
            "price = -5",
            "hidden = true",
            "[plan.basic]",
            "storage = \"1 GiB\"",
            "credits = 10",
            "credits = -1",
            "unknown_key = 1",
            "[section",
            "= 5",
            "\"",
        ])
        .prop_map(str::to_owned),
        "[ -~]{0,20}",
    ];
    let n = check("config", options, few, prop::collection::vec(line, 0..12), |lines| {
        let file = dir.path().join("larder.toml");
        std::fs::write(&file, lines.join("\n")).unwrap();
        let overrides = Overrides {
            root: Some(dir.path().join("root")),
            config: Some(file),
            ..Overrides::default()
        };
        if let Err(e) = Settings::load(overrides, &env_none) {
            let message = e.to_string();
            prop_assert!(
                message.contains("larder.toml") || message.contains("LARDER_"),
                "an error that names nothing: {message}"
            );
        }
        Ok(())
    });
    lines.push(format!("configuration files: {n} generated files; each loads or fails with an error naming the file"));
    lines
}
